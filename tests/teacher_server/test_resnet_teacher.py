"""ResNet-50 as a teacher: ``--arch``/``--layer`` settings, and a branched trunk end to end (precompute through the
CLI, serve, train a student against it)."""

import httpx
import numpy as np
import pytest
import torch

from shared.errors import ConfigError
from shared.features import HEADER_TEACHER
from shared.imageio import read_rgb
from shared.manifest import read_manifest
from shared.nets.teachers import load_teacher
from shared.settings import add_settings_arguments, settings_from_args
from student_trainer.checkpoint import load_checkpoint
from student_trainer.logs import read_metrics
from student_trainer.transfer import run_transfer
from student_trainer.transfer_settings import TransferSettings
from teacher_server.app import create_app
from teacher_server.settings import PrecomputeSettings, ServeSettings
from teacher_server.store import FeatureStore
from tests.servers import run_cli, uvicorn_thread


def _parse(*argv):
    import argparse

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, PrecomputeSettings)
    return settings_from_args(PrecomputeSettings, parser.parse_args(["--store", "s", "--manifests", "m", *argv]))


def test_layer_defaults_to_the_arch_and_is_checked_at_start():
    assert _parse().layer == "pool5"
    assert _parse("--arch", "resnet50").layer == "layer4"
    assert _parse("--arch", "resnet50", "--layer", "layer3").layer == "layer3"
    assert _parse("--arch", "checkpoint", "--weights", "t.pt").layer == "pool5"
    with pytest.raises(ConfigError, match=r"--layer .*'resnet50' has no layer 'pool5'; its layers: layer3, layer4"):
        _parse("--arch", "resnet50", "--layer", "pool5")
    with pytest.raises(ConfigError, match=r"--layer .*'vgg16' has no layer 'layer4'; its layers: pool5"):
        _parse("--arch", "vgg16", "--layer", "layer4")


def _teacher_map(teacher, path):
    x = torch.from_numpy(read_rgb(path)).permute(2, 0, 1)[None].float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (teacher.identity.mean, teacher.identity.std))
    with torch.inference_mode():
        return teacher.trunk((x - mean) / std)[0].numpy()


@pytest.mark.slow
def test_resnet50_layer3_teacher_end_to_end(tmp_path, synth_tiny):
    # 64x80 frames: layer3 (stride 16) gives 4x5 maps, which alexnet-small (pool5 stride 16) matches with pad 2.
    store_path = tmp_path / "store"
    out = run_cli("teacher_server.cli", "precompute", "--store", str(store_path), "--manifests", str(synth_tiny),
                  "--arch", "resnet50", "--weights", "random", "--layer", "layer3", "--shard-frames", "8",
                  "--batch-size", "4", "--loader-workers", "0", "--no-progress")
    teacher = load_teacher("resnet50", "random", layer="layer3")  # seed 0, as the CLI's default
    teacher_id = teacher.identity.short_id()
    assert teacher_id.startswith("resnet50-layer3-") and f"teacher {teacher_id}" in out.stdout

    store = FeatureStore.open(store_path)
    assert store.teacher == teacher.identity and store.teacher.out_channels == 1024
    col = store.collections["synth"]
    assert col.shape == (1024, 4, 5) and int(col.done().sum()) == col.n_frames
    manifest = read_manifest(synth_tiny)
    frames = list(manifest)
    for i in (0, len(frames) - 1):  # the stored maps are the branched trunk's own output (float32 rounding of
        # a batch of 4 vs 1 through 23 bottlenecks: ~5e-5 on maps of magnitude ~5)
        np.testing.assert_allclose(col.read([i])[0], _teacher_map(teacher, manifest.path(frames[i].rgb)),
                                   rtol=1e-4, atol=2e-4)

    with uvicorn_thread(create_app(ServeSettings(stores=[store_path]))) as url:
        info = httpx.get(f"{url}/info").json()
        assert info["teacher_id"] == teacher_id and info["layer"] == "layer3"
        assert httpx.get(f"{url}/features/{frames[0].id}").headers[HEADER_TEACHER] == teacher_id
        s = TransferSettings(modality="hha", teacher_url=url, manifest=synth_tiny, out=tmp_path / "run",
                             profile="tiny", iterations=6, batch_size=4, checkpoint_every=6, log_every=2,
                             loader_workers=0, progress=False)
        summary = run_transfer(s)
    assert summary["teacher"] == teacher_id
    ckpt = load_checkpoint(s.out / "checkpoint.pt")
    assert ckpt["teacher"]["id"] == teacher_id and ckpt["teacher"]["layer"] == "layer3"
    assert ckpt["trunk"]["spec"]["conv1_padding"] == 2  # the padding search matched the 4x5 ResNet map
    assert ckpt["model"]["adapter.0.weight"].shape[0] == 1024
    rows = read_metrics(s.out / "metrics.jsonl")
    assert rows[-1]["step"] == 6 and all(np.isfinite(r["loss"]) for r in rows)
