"""A contact sheet: one row per frame, every modality side by side, boxes and class names drawn.

Columns: RGB (t) | depth | raw depth | HHA | RGB (t+1) | flow image; a panel is blank where the frame has
no such modality (depth frames fill the first four, flow frames RGB, RGB t+1 and flow). HHA and flow images
come from the manifest when it lists them, else they are computed on the fly.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from shared.flow_image import encode_flow_image
from shared.imageio import read_depth_m, read_rgb, write_image
from shared.manifest import FrameRecord, Manifest, read_manifest
from xmodal_data.flow import compute_flow
from xmodal_data.hha import compute_hha

__all__ = ["make_contact_sheet"]

COLUMNS = ("RGB t", "depth", "raw depth", "HHA", "RGB t+1", "flow")
_AT_T = ("RGB t", "depth", "raw depth", "HHA")  # panels of frame t, where the boxes belong
_MIN_PANEL_HEIGHT = 192  # pixels: small frames are enlarged (nearest neighbour) to at least this height
_BLANK = 40  # grey level of empty panels
_CAPTION_H = 18
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]


def _pick_frames(manifest: Manifest, n: int) -> list[FrameRecord]:
    """About half depth frames and half flow frames, labelled ones first, spread over the manifest."""
    def pool(has: str) -> list[FrameRecord]:
        frames = [f for f in manifest if getattr(f, has) is not None]
        return [f for f in frames if f.labeled] or frames

    depth, flow = pool("depth"), pool("rgb_next")
    n_depth = min(len(depth), max(math.ceil(n / 2), n - len(flow)))
    n_flow = min(len(flow), n - n_depth)
    picked = []
    for frames, k in ((depth, n_depth), (flow, n_flow)):
        picked += [frames[i] for i in np.linspace(0, len(frames) - 1, k).round().astype(int)] if k else []
    return picked or manifest.frames[:n]


def _colour_depth(depth_m: np.ndarray, far: float) -> np.ndarray:
    """Depth (H, W) metres -> (H, W, 3) uint8 RGB (turbo colormap over 0..far, black = missing)."""
    levels = np.clip(depth_m / far * 255, 0, 255).astype(np.uint8)
    rgb = cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[..., ::-1].copy()
    rgb[depth_m <= 0] = 0
    return rgb


def _panels(manifest: Manifest, frame: FrameRecord) -> dict[str, np.ndarray]:
    rgb = read_rgb(manifest.path(frame.rgb))
    panels = {"RGB t": rgb}
    if frame.depth is not None:
        depth = read_depth_m(manifest.path(frame.depth))
        raw = read_depth_m(manifest.path(frame.raw_depth)) if frame.raw_depth is not None else None
        far = float(depth.max()) or 1.0
        panels["depth"] = _colour_depth(depth, far)
        if raw is not None:
            panels["raw depth"] = _colour_depth(raw, far)
        if frame.hha is not None and manifest.path(frame.hha).is_file():
            panels["HHA"] = read_rgb(manifest.path(frame.hha))
        elif frame.intrinsics is not None:
            panels["HHA"] = compute_hha(depth, frame.intrinsics, raw)
    if frame.rgb_next is not None:
        rgb_next = read_rgb(manifest.path(frame.rgb_next))
        panels["RGB t+1"] = rgb_next
        if frame.flow is not None and manifest.path(frame.flow).is_file():
            panels["flow"] = read_rgb(manifest.path(frame.flow))
        else:
            panels["flow"] = encode_flow_image(compute_flow(rgb, rgb_next))
    return panels


def _draw_boxes(panel: np.ndarray, frame: FrameRecord, classes: list[str], scale: int, names: bool) -> None:
    for obj in frame.objects or ():
        colour = _PALETTE[(classes.index(obj.label) if obj.label in classes else 0) % len(_PALETTE)]
        x1, y1, x2, y2 = (round(c * scale) for c in obj.box)
        # Box edges are pixel edges: the last covered pixel is x2 - 1.
        cv2.rectangle(panel, (x1, y1), (x2 - 1, y2 - 1), colour, 1)
        if names:
            (tw, th), _ = cv2.getTextSize(obj.label, _FONT, 0.4, 1)
            ty = max(y1, th + 2)
            cv2.rectangle(panel, (x1, ty - th - 2), (x1 + tw + 2, ty), colour, -1)
            cv2.putText(panel, obj.label, (x1 + 1, ty - 2), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)


def _row(manifest: Manifest, frame: FrameRecord, height: int, width: int, scale: int) -> np.ndarray:
    panels = _panels(manifest, frame)
    tiles = []
    for name in COLUMNS:
        tile = np.full((height * scale, width * scale, 3), _BLANK, np.uint8)
        if name in panels:
            img = panels[name]
            if img.shape[:2] != (height, width):
                img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
            tile = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            if name in _AT_T:
                _draw_boxes(tile, frame, manifest.classes, scale, names=name == "RGB t")
        tiles.append(np.pad(tile, ((0, 0), (0, 2), (0, 0))))
    caption = np.zeros((_CAPTION_H, len(tiles) * (width * scale + 2), 3), np.uint8)
    cv2.putText(caption, f"{frame.id}  [{frame.split}]", (4, 13), _FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([caption, np.concatenate(tiles, axis=1)], axis=0)


def make_contact_sheet(manifest_path: str | os.PathLike[str], out_png: str | os.PathLike[str], n: int = 6) -> Path:
    """Draw ``n`` frames of a manifest (about half depth, half flow frames) into one PNG.

    Frames of another size than the first are resized to it. Boxes (which belong to frame t) are drawn on
    the panels of frame t, class names on its RGB panel; RGB t+1 stays bare so the motion shows.

    Returns:
        ``out_png`` as a Path.

    Raises:
        ValueError: ``n`` < 1 or the manifest has no frames.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 frame, got {n}")
    manifest = read_manifest(manifest_path)
    frames = _pick_frames(manifest, n)
    if not frames:
        raise ValueError(f"manifest {manifest_path} has no frames to draw")
    height, width = read_rgb(manifest.path(frames[0].rgb)).shape[:2]
    scale = max(1, math.ceil(_MIN_PANEL_HEIGHT / height))
    header = np.zeros((_CAPTION_H, len(COLUMNS) * (width * scale + 2), 3), np.uint8)
    for i, name in enumerate(COLUMNS):
        cv2.putText(header, name, (i * (width * scale + 2) + 4, 13), _FONT, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    rows = [_row(manifest, f, height, width, scale) for f in frames]
    return write_image(out_png, np.concatenate([header, *rows], axis=0))
