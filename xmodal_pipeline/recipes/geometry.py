"""The frame size of the transfer pairs: one size for every frame, at which the AlexNet student can match each
teacher's pool5 map.

``teacher-server precompute`` needs one input size per collection (real UCF101 mixes 320x240 with a few 400x226
clips), and the student regresses the teacher's whole-frame map, so its pool5 must have the same H x W; the
transfer trainer searches the student's conv1 padding for that (:func:`student_trainer.student.student_spec_for`).
A padding does not always exist: torchvision's AlexNet pools in floor mode, the paper's CaffeNet-layout student in
ceil mode, and at 240x320 the teacher's 6x9 is out of the student's reach (it gives 7x9, 7x10 or 8x10). So the
recipes precompute at the size nearest the frames' own at which every teacher is reachable (480x640 is: NYUD2
keeps its size), and the trainer resizes the student's input to the same size.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from shared.errors import GeometryError

__all__ = ["common_frame_size", "png_size", "transfer_input_size"]

_MAX_PADDING = 16  # the trainer's search range (shared.nets.geometry.find_conv1_padding)


def png_size(path: Path) -> tuple[int, int]:
    """(H, W) of a PNG from its IHDR chunk (the first 24 bytes), without decoding it.

    Raises:
        DataError: not a PNG (names the file).
    """
    from shared.errors import DataError

    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise DataError(f"{path} is not a PNG file (expected the importers' PNG frames)")
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def common_frame_size(paths: Iterable[Path]) -> tuple[int, int]:
    """The most common (H, W) among PNG frames (ties: the first seen)."""
    counts = Counter(png_size(p) for p in paths)
    if not counts:
        raise GeometryError("no frames to take a size from")
    return counts.most_common(1)[0][0]


def _lengths(trunk: object, sizes: Sequence[int], axis: int) -> dict[int, int | None]:
    """pool5 length along one axis for each input length (square kernels: the axes are independent)."""
    from shared.nets.geometry import feature_size

    out: dict[int, int | None] = {}
    for n in sizes:
        try:
            out[n] = feature_size(trunk, (n, 64) if axis == 0 else (64, n))[axis]  # type: ignore[arg-type]
        except GeometryError:
            out[n] = None
    return out


def transfer_input_size(native_hw: tuple[int, int], teachers: Sequence[str], max_change: float = 0.15
                        ) -> tuple[int, int]:
    """The input size nearest ``native_hw`` at which some conv1 padding of the AlexNet student gives the pool5
    H x W of each teacher (torchvision ``alexnet`` / ``vgg16``).

    Nearest: smallest relative change of the larger-changed side, then least aspect-ratio change, then smaller.

    Raises:
        GeometryError: no such size within ``max_change`` of each side (names the size and teachers).
    """
    import torch
    import torchvision

    from shared.nets.trunks import AlexNetTrunk, trunk_spec

    h0, w0 = native_hw
    heights = range(max(8, round(h0 * (1 - max_change))), round(h0 * (1 + max_change)) + 1)
    widths = range(max(8, round(w0 * (1 - max_change))), round(w0 * (1 + max_change)) + 1)
    with torch.device("meta"):  # geometry only: no weights are allocated or initialised
        nets = {t: torchvision.models.get_model(t).features for t in teachers}
        students = [AlexNetTrunk(trunk_spec("alexnet", conv1_padding=p)) for p in range(_MAX_PADDING + 1)]
    t_len = {t: (_lengths(n, heights, 0), _lengths(n, widths, 1)) for t, n in nets.items()}
    s_len = [(_lengths(s, heights, 0), _lengths(s, widths, 1)) for s in students]

    def reachable(h: int, w: int) -> bool:
        return all(th[h] is not None and any(sh[h] == th[h] and sw[w] == tw[w] for sh, sw in s_len)
                   for th, tw in t_len.values())

    def cost(hw: tuple[int, int]) -> tuple[float, float, int]:
        rh, rw = hw[0] / h0, hw[1] / w0
        return max(abs(rh - 1), abs(rw - 1)), abs(rh - rw), hw[0] * hw[1]

    for h, w in sorted(((h, w) for h in heights for w in widths), key=cost):
        if reachable(h, w):
            return h, w
    raise GeometryError(f"no input size within {100 * max_change:.0f} percent of {h0}x{w0} lets an AlexNet student "
                        f"match the pool5 map of {', '.join(teachers)}; pass --transfer-input-size")
