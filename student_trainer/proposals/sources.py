"""Proposal sources for one image: Edge Boxes and selective search on OpenCV's contrib module ``cv2.ximgproc``.

* :func:`edge_boxes`: Edge Boxes (Zitnick & Dollár, ECCV 2014) on a gradient edge map of the RGB frame (Lab,
  Sobel, thinned along the edge normal: :func:`edge_map`), scored by Edge Boxes' objectness. Images whose
  short side is under :data:`EDGE_MIN_SHORT_SIDE` are upsampled first, so small objects still enclose whole
  edge groups.
* :func:`selective_search`: selective search (Uijlings et al., IJCV 2013) run as separate hierarchies, one per
  (colour space or paired-modality image) x (graph-segmentation scale) x (similarity strategy), on HSV and
  Lab of the RGB frame plus the paired modality images (HHA or depth, flow). A box's score is the fraction of
  hierarchies that produced it: boxes that many cues agree on rank first. OpenCV returns a hierarchy's boxes
  in a varying order, so ties are ordered by a fixed hash of the coordinates (the reproducible form of
  selective search's own pseudo-random ranking). Images with a long side over :data:`SS_MAX_SIDE` are
  downsampled first and the boxes scaled back.

Both return ``(boxes (N, 4) float32, scores (N,) float32)``: ``[x1, y1, x2, y2]`` pixel edges (x2/y2
exclusive) inside the image, at least 1 pixel wide and high, no two identical, in descending score order.
Both are deterministic, bit for bit, whatever the thread count (checked; note that ``cv2.magnitude`` is not,
see :func:`edge_map`). Neither imports torch, so worker processes stay light.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = [
    "EDGE_MIN_SHORT_SIDE",
    "SS_MAX_SIDE",
    "ProposalInputs",
    "check_opencv_contrib",
    "edge_boxes",
    "edge_map",
    "selective_search",
]

EDGE_MIN_SHORT_SIDE = 144
"""Edge Boxes runs on the image upsampled to at least this short side (the synth quick profile's 96 px -> 1.5x)."""

_EDGE_BOX_PARAMS = {"alpha": 0.6, "beta": 0.7, "minScore": 0.0, "maxAspectRatio": 4.0}
_EDGE_MIN_BOX_AREA = 9.0  # pixels of the original image
_SS_SIGMA = 0.8
_SS_REFERENCE_AREA = 96 * 128  # the k values below suit this many pixels; they grow with sqrt(area)
_SS_BASE_K = 50.0
SS_MAX_SIDE = 320
"""Selective search runs on the image downsampled to at most this long side (its cost grows with the pixels;
boxes are scaled back, a few pixels coarser, which IoU 0.5 tolerates)."""


def check_opencv_contrib() -> None:
    """Raise unless ``cv2.ximgproc`` (OpenCV contrib) is importable.

    Raises:
        RuntimeError: with the pip commands that fix it.
    """
    if not hasattr(cv2, "ximgproc"):
        raise RuntimeError(
            f"proposal generation needs cv2.ximgproc from opencv-contrib-python-headless, but OpenCV "
            f"{cv2.__version__} here has no contrib modules: pip uninstall -y opencv-python-headless "
            "opencv-contrib-python-headless && pip install opencv-contrib-python-headless"
        )


@dataclass(frozen=True)
class ProposalInputs:
    """One frame's images for a generator.

    Attributes:
        rgb: (H, W, 3) uint8 RGB.
        paired: 3-channel uint8 (H, W, 3) images of the paired modality (HHA, encoded depth, flow image);
            selective search adds them to its colour spaces. May be empty.
    """

    rgb: np.ndarray
    paired: tuple[np.ndarray, ...] = ()

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"rgb must be (H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        for i, img in enumerate(self.paired):
            if img.dtype != np.uint8 or img.shape != self.rgb.shape:
                raise ValueError(f"paired image {i} must be uint8 of the RGB's shape {self.rgb.shape}, "
                                 f"got {img.shape} {img.dtype}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.rgb.shape[0], self.rgb.shape[1]


# ---------------------------------------------------------------- box utilities


def _tidy(boxes: np.ndarray, scores: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the image, drop boxes under 1 pixel and exact repeats (first kept), keep the given order."""
    h, w = size
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, 0::2] = b[:, 0::2].clip(0, w)
    b[:, 1::2] = b[:, 1::2].clip(0, h)
    keep = ((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)
    b, s = b[keep], np.asarray(scores, np.float64)[keep]
    _, first = np.unique(b, axis=0, return_index=True)
    first.sort()
    return b[first].astype(np.float32), s[first].astype(np.float32)


def _rank_key(boxes: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random integer per box (splitmix-style mix of the integer coordinates)."""
    b = np.rint(boxes).astype(np.uint64)
    with np.errstate(over="ignore"):
        k = b[:, 0] * np.uint64(0x9E3779B97F4A7C15) ^ b[:, 1] * np.uint64(0xBF58476D1CE4E5B9)
        k ^= b[:, 2] * np.uint64(0x94D049BB133111EB) ^ b[:, 3] * np.uint64(0xD6E8FEB86659FD93)
        k ^= k >> np.uint64(31)
        k *= np.uint64(0x9E3779B97F4A7C15)
        k ^= k >> np.uint64(29)
    return k


# ---------------------------------------------------------------- Edge Boxes


def _gradient_magnitude(image: np.ndarray) -> np.ndarray:
    mag = np.zeros(image.shape[:2], np.float32)
    for c in range(image.shape[2]):
        ch = image[..., c]
        # np.hypot, not cv2.magnitude: OpenCV's SIMD path gives last-bit differences that depend on the
        # arrays' memory alignment, so the same image could give different boxes from call to call.
        mag = np.maximum(mag, np.hypot(cv2.Sobel(ch, cv2.CV_32F, 1, 0), cv2.Sobel(ch, cv2.CV_32F, 0, 1)))
    return mag


def _triangle_blur(image: np.ndarray, radius: int) -> np.ndarray:
    kernel = np.concatenate([np.arange(1, radius + 2), np.arange(radius, 0, -1)]).astype(np.float32)
    kernel /= kernel.sum()
    return cv2.sepFilter2D(image, -1, kernel, kernel, borderType=cv2.BORDER_REFLECT)


def edge_map(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin edges and their orientation, the inputs of ``cv2.ximgproc.EdgeBoxes``.

    Edge strength is the largest Sobel gradient over the Lab channels of the slightly blurred image, divided by
    its 99th percentile (at least 30 grey levels, so flat images stay quiet) and clipped to [0, 1]; orientation
    follows Dollár's structured-edge toolbox (second derivatives of the triangle-blurred map, modulo pi), and
    pixels that are not a maximum along the edge normal are zeroed.

    Args:
        rgb: (H, W, 3) uint8 RGB.

    Returns:
        (edges, orientation): two (H, W) float32 maps; edges in [0, 1], orientation in [0, pi) radians.
    """
    lab = cv2.cvtColor(cv2.GaussianBlur(rgb, (0, 0), 0.8), cv2.COLOR_RGB2LAB).astype(np.float32)
    mag = _gradient_magnitude(lab)
    edges = np.clip(mag / max(float(np.percentile(mag, 99)), 30.0), 0, 1).astype(np.float32)
    smooth = _triangle_blur(edges, 4)
    gy, gx = np.gradient(smooth)  # numpy: derivative along rows (y) first
    _, gxx = np.gradient(gx)
    gyy, gyx = np.gradient(gy)
    orientation = np.mod(np.arctan(gyy * np.sign(-gyx) / (gxx + 1e-5)), np.pi).astype(np.float32)
    h, w = edges.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = np.cos(orientation), np.sin(orientation)
    ahead = cv2.remap(edges, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    behind = cv2.remap(edges, xs - dx, ys - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    thin = np.where((edges >= ahead) & (edges >= behind), edges, 0).astype(np.float32)
    return thin, orientation


def edge_boxes(inputs: ProposalInputs, max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """Edge Boxes proposals of the RGB frame, best first (see the module docstring)."""
    check_opencv_contrib()
    h, w = inputs.size
    scale = max(1.0, EDGE_MIN_SHORT_SIDE / min(h, w))
    rgb = inputs.rgb
    if scale > 1:
        rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
    edges, orientation = edge_map(rgb)
    eb = cv2.ximgproc.createEdgeBoxes(maxBoxes=max_boxes, minBoxArea=_EDGE_MIN_BOX_AREA * scale**2,
                                      **_EDGE_BOX_PARAMS)
    rects, scores = eb.getBoundingBoxes(edges, orientation)
    b = np.asarray(rects, np.float64).reshape(-1, 4)
    b[:, 2:] += b[:, :2]  # (x, y, w, h) pixel counts -> exclusive edges
    b /= scale
    s = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    return _tidy(b[order], s[order], inputs.size)


# ---------------------------------------------------------------- selective search


def _ss_strategies() -> list:
    seg = cv2.ximgproc.segmentation
    colour = seg.createSelectiveSearchSegmentationStrategyColor
    fill = seg.createSelectiveSearchSegmentationStrategyFill
    size = seg.createSelectiveSearchSegmentationStrategySize
    texture = seg.createSelectiveSearchSegmentationStrategyTexture
    multiple = seg.createSelectiveSearchSegmentationStrategyMultiple
    return [multiple(colour(), texture(), size(), fill()), multiple(texture(), size(), fill())]


def _ss_images(inputs: ProposalInputs) -> list[np.ndarray]:
    bgr = cv2.cvtColor(inputs.rgb, cv2.COLOR_RGB2BGR)
    return [cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV), cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab),
            *(np.ascontiguousarray(p[..., ::-1]) for p in inputs.paired)]


def selective_search(inputs: ProposalInputs, max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """Selective-search proposals scored by agreement across hierarchies (see the module docstring)."""
    check_opencv_contrib()
    seg = cv2.ximgproc.segmentation
    size = inputs.size
    scale = min(1.0, SS_MAX_SIDE / max(size))
    if scale < 1:
        dsize = (max(1, round(size[1] * scale)), max(1, round(size[0] * scale)))
        small = [cv2.resize(im, dsize, interpolation=cv2.INTER_AREA) for im in (inputs.rgb, *inputs.paired)]
        inputs = ProposalInputs(small[0], tuple(small[1:]))
    h, w = inputs.size
    k1 = _SS_BASE_K * float(np.clip(np.sqrt(h * w / _SS_REFERENCE_AREA), 1.0, 3.0))
    base = cv2.cvtColor(inputs.rgb, cv2.COLOR_RGB2BGR)
    found = []
    for image in _ss_images(inputs):
        for k in (k1, 2 * k1):
            for strategy in _ss_strategies():
                ss = seg.createSelectiveSearchSegmentation()
                ss.setBaseImage(base)
                ss.clearImages()
                ss.addImage(image)
                ss.clearGraphSegmentations()
                ss.addGraphSegmentation(seg.createGraphSegmentation(_SS_SIGMA, k, int(k)))
                ss.clearStrategies()
                ss.addStrategy(strategy)
                found.append(np.unique(np.asarray(ss.process(), np.int64).reshape(-1, 4), axis=0))
    runs = len(found)
    rects, votes = np.unique(np.concatenate(found), axis=0, return_counts=True)
    b = rects.astype(np.float64)
    b[:, 2:] += b[:, :2]
    order = np.lexsort((_rank_key(b), -votes))
    b, s = b[order][:max_boxes] / scale, votes[order][:max_boxes] / runs
    return _tidy(b, s, size)
