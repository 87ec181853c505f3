"""Fast R-CNN pieces: shapes, RoI sampling, loss, post-processing, flips and frozen trunks (no run folders)."""

import numpy as np
import pytest
import torch

from shared.boxes import decode_boxes
from shared.imageio import write_image
from shared.modalities import modality
from shared.nets.trunks import AlexNetTrunk, trunk_spec
from student_trainer.detect_data import DetectFrame, load_frame, pad_images, resize_factor
from student_trainer.detector import FastRCNN, fast_rcnn_loss, postprocess_detections, sample_rois
from student_trainer.fusion import fuse_outputs
from student_trainer.transfer_data import BatchSchedule

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(num_classes=3, fc=16, seed=0):
    torch.manual_seed(seed)
    return FastRCNN(AlexNetTrunk(trunk_spec("alexnet-small", width=0.25)), num_classes, fc_width=fc)


def _random_boxes(n, hw=(64, 80), seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([hw[1] - 12, hw[0] - 12])
    wh = 6 + torch.rand(n, 2, generator=g) * 30
    return torch.cat([xy, (xy + wh).minimum(torch.tensor([hw[1], hw[0]]))], 1)


def test_forward_shapes_and_stride():
    model = _model(num_classes=4, fc=24)
    assert model.roi_pool.spatial_scale == 1 / model.trunk.conv5_stride == 1 / 8
    rois = [_random_boxes(7), _random_boxes(5, seed=1)]
    logits, deltas = model(torch.randn(2, 3, 64, 80), rois)
    assert logits.shape == (12, 5) and deltas.shape == (12, 20)
    assert "trunk_frozen=False" in repr(model) and "stride 8" in repr(model)
    with pytest.raises(ValueError, match="one RoI tensor per image"):
        model(torch.randn(2, 3, 64, 80), rois[:1])
    alex = FastRCNN(AlexNetTrunk(trunk_spec("alexnet", width=0.125)), 2, fc_width=8)
    assert alex.roi_pool.spatial_scale == 1 / 16 and alex.fc6[0].in_features == alex.trunk.out_channels * 36


def test_state_dict_keeps_trunk_prefix():
    keys = _model().state_dict().keys()
    assert "trunk.conv1.0.weight" in keys and "cls_score.weight" in keys and "bbox_pred.weight" in keys


def test_roi_sampling_fractions_and_iou_ranges():
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0], [45.0, 20.0, 75.0, 60.0]])
    labels = torch.tensor([1, 3])
    # 60 jittered copies of the boxes (mostly foreground) + 300 random boxes (mostly background)
    g = torch.Generator().manual_seed(0)
    jitter = gt.repeat(30, 1) + torch.randn(60, 4, generator=g) * 2
    props = torch.cat([jitter, _random_boxes(300)])
    torch.manual_seed(0)
    rois, lab, targets = sample_rois([props], [gt], [labels], rois_per_image=128, fg_fraction=0.25)
    assert rois[0].shape == (128, 4) and lab.shape == (128,) and targets.shape == (128, 4)
    fg = lab > 0
    assert fg.sum() == 32  # enough candidates: exactly 25 %
    from torchvision.ops import box_iou

    best = box_iou(rois[0], gt).max(1)
    assert (best.values[fg] >= 0.5).all() and (best.values[~fg] < 0.5).all()
    assert torch.equal(lab[fg], labels[best.indices[fg]])
    # the targets move foreground RoIs exactly onto their boxes
    decoded = decode_boxes(rois[0][fg], targets[fg].repeat(1, 1))
    assert torch.allclose(decoded, gt[best.indices[fg]], atol=1e-3)


def test_roi_sampling_adds_ground_truth_and_handles_scarce_and_empty():
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    far = torch.tensor([[50.0, 40.0, 70.0, 60.0]] * 3)  # background only: the gt box itself is the foreground
    torch.manual_seed(0)
    no_labels = torch.zeros(0, dtype=torch.long)
    rois, lab, _ = sample_rois([far, far], [gt, torch.zeros(0, 4)], [torch.tensor([2]), no_labels], rois_per_image=128)
    assert len(rois[0]) == 4 and lab[:4].tolist().count(2) == 1  # 3 proposals + the gt box
    assert len(rois[1]) == 3 and (lab[4:] == 0).all()  # no objects: all background


def test_loss_uses_class_specific_deltas_and_beta():
    logits = torch.zeros(4, 3)
    deltas = torch.zeros(4, 12)
    deltas[0, 8:12] = 2.0  # class 2's deltas of RoI 0
    labels = torch.tensor([2, 0, 0, 0])
    targets = torch.zeros(4, 4)
    cls, box = fast_rcnn_loss(logits, deltas, labels, targets, beta=1.0)
    assert cls.item() == pytest.approx(np.log(3))
    assert box.item() == pytest.approx(4 * (2 - 0.5) / 4)  # smooth-L1 (beta 1) summed over fg, / sampled RoIs
    _, box9 = fast_rcnn_loss(logits, deltas, labels, targets, beta=1 / 9)
    assert box9.item() == pytest.approx(4 * (2 - 0.5 / 9) / 4)


def test_postprocess_thresholds_nms_and_zero_based_labels():
    props = torch.tensor([[10.0, 10.0, 30.0, 30.0], [11.0, 10.0, 31.0, 30.0], [50.0, 5.0, 70.0, 25.0]])
    logits = torch.tensor([[0.0, 5.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 6.0]])
    deltas = torch.zeros(3, 12)
    boxes, scores, labels = postprocess_detections(logits, deltas, props, (64, 80), score_thresh=0.01)
    top = [(tuple(b.tolist()), int(lab)) for b, lab, s in zip(boxes, labels, scores, strict=True) if s > 0.5]
    assert top == [(tuple(props[2].tolist()), 1), (tuple(props[0].tolist()), 0)]  # NMS removed the near-copy
    assert (scores[:-1] >= scores[1:]).all()
    boxes, _, _ = postprocess_detections(logits, deltas, props, (64, 80), score_thresh=0.01, max_detections=2)
    assert len(boxes) == 2
    # fusing a detector with itself changes nothing
    fl, fd = fuse_outputs(logits, deltas, logits, deltas)
    assert all(torch.equal(a, b) for a, b in zip(postprocess_detections(fl, fd, props, (64, 80)),
                                                 postprocess_detections(logits, deltas, props, (64, 80)), strict=True))


def _frame(tmp_path, img, name="f"):
    path = write_image(tmp_path / f"{name}.png", img)
    return DetectFrame(id=f"t.{name}", image=str(path), size=img.shape[:2],
                       boxes=np.array([[2.0, 4.0, 12.0, 20.0]], np.float32), labels=np.array([1]),
                       difficult=np.array([False]), proposals=np.array([[0.0, 0.0, 5.0, 6.0]], np.float32))


def test_flip_moves_image_boxes_and_proposals_together_and_negates_flow_u(tmp_path):
    img = np.full((24, 40, 3), 128, np.uint8)
    img[:, :10, 1] = 200  # a marker in the left quarter
    img[..., 0] = 160  # flow u = +2 px
    frame = _frame(tmp_path, img)
    plain = load_frame(frame, modality("flow"), flip=False)
    flipped = load_frame(frame, modality("flow"), flip=True)
    assert torch.equal(plain.labels, torch.tensor([2]))  # 1-based for the detector
    assert flipped.boxes.tolist() == [[28.0, 4.0, 38.0, 20.0]]
    assert flipped.proposals.tolist() == [[35.0, 0.0, 40.0, 6.0]]
    assert torch.equal(flipped.image[1], plain.image[1].flip(-1))  # v channel mirrored
    assert torch.allclose(flipped.image[0], -plain.image[0])  # u negated (128-centred preset)
    assert torch.equal(load_frame(frame, modality("hha"), flip=True).image[0],
                       load_frame(frame, modality("hha")).image[0].flip(-1))  # HHA: plain mirror


def test_resize_scales_boxes_and_padding(tmp_path):
    frame = _frame(tmp_path, np.zeros((24, 40, 3), np.uint8))
    assert resize_factor((24, 40), None, 2000) == 1.0
    assert resize_factor((24, 40), 48, 60) == pytest.approx(1.5)  # capped by the longer side
    big = load_frame(frame, modality("rgb"), short_side=48, max_side=2000)
    assert big.image.shape == (3, 48, 80) and big.scale == (2.0, 2.0)
    assert big.boxes.tolist() == [[4.0, 8.0, 24.0, 40.0]]
    batch = pad_images([big.image, load_frame(frame, modality("rgb")).image])
    assert batch.shape == (2, 3, 48, 80) and (batch[1, :, 24:] == 0).all()


def test_loss_falls_on_a_fixed_batch(tmp_path):
    rng = np.random.default_rng(0)
    frames = []
    for k in range(2):
        img = (rng.random((64, 80, 3)) * 60).astype(np.uint8)
        img[10:40, 8 + 30 * k:30 + 30 * k] = (220, 40, 40) if k else (40, 40, 220)
        frames.append(DetectFrame(
            id=f"t.{k}", image=str(write_image(tmp_path / f"{k}.png", img)), size=(64, 80),
            boxes=np.array([[8.0 + 30 * k, 10.0, 30.0 + 30 * k, 40.0]], np.float32), labels=np.array([k]),
            difficult=np.array([False]), proposals=_random_boxes(150, seed=k).numpy(),
        ))
    model = _model(num_classes=2, fc=32).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    schedule = BatchSchedule(2, 2, seed=0)
    losses = []
    for step in range(25):
        idx, flips = schedule.batch(step)
        batch = [load_frame(frames[i], modality("rgb"), bool(f)) for i, f in zip(idx, flips, strict=True)]
        rois, labels, targets = sample_rois([b.proposals for b in batch], [b.boxes for b in batch],
                                            [b.labels for b in batch], rois_per_image=32)
        logits, deltas = model(pad_images([b.image for b in batch]), rois)
        cls, box = fast_rcnn_loss(logits, deltas, labels, targets)
        opt.zero_grad()
        (cls + box).backward()
        opt.step()
        losses.append((cls + box).item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_frozen_trunk_keeps_weights_and_bn_statistics():
    model = _model()
    model.freeze_trunk()
    before = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    fc_before = model.fc6[0].weight.clone()
    model.train()
    assert not model.trunk.training and model.fc6.training
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for _ in range(3):
        logits, deltas = model(torch.randn(2, 3, 64, 80) * 3 + 1, [_random_boxes(8), _random_boxes(8, seed=2)])
        loss = logits.logsumexp(1).mean() + deltas.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.trunk.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # incl. running_mean / running_var
    assert not torch.equal(fc_before, model.fc6[0].weight)
