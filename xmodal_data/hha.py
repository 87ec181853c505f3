"""HHA encoding of depth (Gupta, Girshick, Arbeláez, Malik, ECCV 2014).

A depth map becomes three 8-bit channels: horizontal disparity, height above the ground and the angle between
the local surface normal and gravity. This is a vectorised port of the MATLAB ``saveHHA`` /
``processDepthImage`` / ``computeNormalsSquareSupport`` / ``getYDir`` / ``getRMatrix`` of
github.com/s-gupta/rcnn-depth, matching its output to within rounding (see tests/shared/test_hha.py).

Conventions: the camera frame is OpenCV's (x right, y down, z forward); pixel coordinates are 0-based as in
:mod:`shared.camera` (``u - cx`` is the same number in both conventions, so nothing shifts); depth comes in
metres and is worked on in centimetres, the unit every constant of the original is tuned for.
"""

from __future__ import annotations

import cv2
import numpy as np

from shared.camera import Intrinsics
from shared.errors import DataError

__all__ = [
    "ANGLE_RADIUS",
    "GRAVITY_RADIUS",
    "angle_with_gravity",
    "box_sum",
    "compute_hha",
    "estimate_gravity",
    "height_above_ground",
    "horizontal_disparity",
    "point_cloud_cm",
    "rotation_between",
    "surface_normals",
    "to_uint8",
]

ANGLE_RADIUS = 3
"""Half-size of the square plane-fit window of the normals used for the angle channel (7x7 pixels)."""
GRAVITY_RADIUS = 10
"""Half-size of the window of the smoother normals used to estimate gravity (21x21 pixels)."""

_MAX_DEPTH_M = 100.0  # no depth sensor HHA is meant for sees 100 m: larger values are millimetres or worse
_GRAVITY_SCHEDULE = ((45.0, 5), (15.0, 5))  # (threshold in degrees, iterations), coarse then fine
_DISPARITY_NUMERATOR = 31000.0  # cm: disparity channel = 31000 / depth_cm
_MIN_DEPTH_CM = 100.0  # depths nearer than 1 m are clamped so the disparity channel stays bounded
_FLOOR_MIN_DROP_CM = -90.0  # if the lowest point is above this height (camera at 0), the floor is not seen...
_ASSUMED_FLOOR_CM = -130.0  # ...so the floor is assumed this far below the camera
_ANGLE_OFFSET_DEG = 38.0  # 128 - 90 in the original: keeps the angle channel centred with some slack


def point_cloud_cm(depth_m: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Back-project a depth map into camera coordinates.

    Args:
        depth_m: (H, W) depth along the optical axis, metres (0 = missing, back-projects to the origin).
        intrinsics: camera of this image (0-based principal point).

    Returns:
        (H, W, 3) float64 points ``(X, Y, Z)`` in centimetres, x right, y down, z forward.
    """
    z = np.asarray(depth_m, dtype=np.float64) * 100.0
    u = np.arange(z.shape[1], dtype=np.float64)[None, :]
    v = np.arange(z.shape[0], dtype=np.float64)[:, None]
    # Same operation order as the original ((u - cx) .* Z / fx) so the rounding matches.
    x = (u - intrinsics.cx) * z / intrinsics.fx
    y = (v - intrinsics.cy) * z / intrinsics.fy
    return np.stack([x, y, z], axis=-1)


def box_sum(image: np.ndarray, radius: int) -> np.ndarray:
    """Sum over the ``(2 radius + 1)``-square window around each pixel, zero outside the image.

    This is MATLAB's ``filter2(ones(2r+1), f)`` ('same' size, zero padding), channel by channel.

    Args:
        image: (H, W) or (H, W, C) float64.
        radius: window half-size in pixels, >= 0.

    Returns:
        float64 array of the same shape.
    """
    size = 2 * radius + 1
    return cv2.boxFilter(
        np.asarray(image, dtype=np.float64), -1, (size, size), normalize=False, borderType=cv2.BORDER_CONSTANT
    )


def surface_normals(points_cm: np.ndarray, missing: np.ndarray, radius: int) -> np.ndarray:
    """Unit surface normals from least-squares planes fitted over square windows.

    Each window's valid points are fitted with the plane ``n . P = 1``, written per point as
    ``n_x X/Z + n_y Y/Z + n_z = 1/Z`` (linear in n); the normal equations are summed with :func:`box_sum`
    and solved with the adjugate, as the original does. Missing pixels contribute nothing but still receive
    the normal of their window. Normals are oriented along the viewing ray (``n . P > 0``: away from the
    camera), ties broken towards ``n_z > 0``; so a floor below the camera gets a normal pointing down, along
    gravity.

    Args:
        points_cm: (H, W, 3) camera-frame points in centimetres (see :func:`point_cloud_cm`).
        missing: (H, W) bool, True where the depth is not measured.
        radius: window half-size in pixels (window ``2 radius + 1`` square).

    Returns:
        (H, W, 3) float64 unit normals; NaN where the window holds too few points to fix a plane.
    """
    pts = np.where(missing[..., None], np.nan, points_cm)
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        xz, yz, iz = x / z, y / z, 1.0 / z
        one = np.where(np.isnan(z), np.nan, 1.0)
        # Upper triangle of A^T A (rows a = [X/Z, Y/Z, 1]) then A^T b with b = 1/Z.
        terms = np.stack([xz * xz, xz * yz, xz, yz * yz, yz, one, x / (z * z), y / (z * z), iz], axis=-1)
    terms[np.isnan(terms)] = 0.0
    s = box_sum(terms, radius)
    # OpenCV's running sums leave ~1e-17 residues in windows with no valid point, where MATLAB's filter2
    # gives exact zeros and hence a NaN normal. The point count (channel 5) is exact, being integer sums.
    s[s[..., 5] == 0] = 0.0
    a11, a12, a13, a22, a23, a33, b1, b2, b3 = np.moveaxis(s, -1, 0)
    # Adjugate of the symmetric 3x3 matrix: solving without dividing by the determinant keeps
    # near-singular windows finite; the normalisation below removes the scale.
    c11 = a22 * a33 - a23 * a23
    c12 = -(a12 * a33 - a13 * a23)
    c13 = a12 * a23 - a13 * a22
    c22 = a11 * a33 - a13 * a13
    c23 = -(a11 * a23 - a12 * a13)
    c33 = a11 * a22 - a12 * a12
    n = np.stack(
        [c11 * b1 + c12 * b2 + c13 * b3, c12 * b1 + c22 * b2 + c23 * b3, c13 * b1 + c23 * b2 + c33 * b3],
        axis=-1,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        n /= np.sqrt(np.sum(n * n, axis=-1, keepdims=True))
    # Two sign flips in the original's order: first n_z >= 0, then along the viewing ray of the
    # unmasked point; a zero or NaN sign keeps the previous orientation.
    flip_z = np.where(n[..., 2] < 0, -1.0, 1.0)
    n *= flip_z[..., None]
    along_ray = np.sum(n * points_cm, axis=-1)
    n *= np.where(along_ray < 0, -1.0, 1.0)[..., None]
    return n


def estimate_gravity(
    normals: np.ndarray,
    schedule: tuple[tuple[float, int], ...] = _GRAVITY_SCHEDULE,
    initial: tuple[float, float, float] = (0.0, 1.0, 0.0),
) -> np.ndarray:
    """Estimate the gravity direction from surface normals (``getYDir`` of the original).

    Starting from ``initial``, each iteration labels normals within ``t`` degrees of the current direction
    as horizontal surfaces (floor-like, set F) and normals within ``t`` degrees of perpendicular as walls
    (set W), then takes the direction most perpendicular to the walls and most parallel to the floors: the
    eigenvector of the smallest eigenvalue of ``NW NW^T - NF NF^T``, signed to agree with the previous one.

    Args:
        normals: (H, W, 3) or (N, 3) unit normals; rows with NaN are ignored.
        schedule: ``(threshold_degrees, iterations)`` stages, run in order.
        initial: starting direction, camera frame (y down: ``(0, 1, 0)`` means "down in the image").

    Returns:
        (3,) float64 unit vector pointing down along gravity, camera frame.

    Raises:
        DataError: no finite normal to estimate from.
    """
    nn = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    nn = nn[~np.isnan(nn).any(axis=1)]
    if nn.shape[0] == 0:
        raise DataError("cannot estimate gravity: no pixel has a surface normal (is all the depth missing?)")
    g = np.asarray(initial, dtype=np.float64)
    for thresh_deg, iterations in schedule:
        cos_t, sin_t = np.cos(np.deg2rad(thresh_deg)), np.sin(np.deg2rad(thresh_deg))
        for _ in range(iterations):
            sim = np.abs(nn @ g)
            # +1 for walls, -1 for floors: A = NW^T NW - NF^T NF without copying the subsets.
            weight = (sim < sin_t).astype(np.float64) - (sim > cos_t).astype(np.float64)
            a = (nn * weight[:, None]).T @ nn
            _, vectors = np.linalg.eigh(a)  # ascending eigenvalues
            new = vectors[:, 0]
            # The original multiplies by sign(g . new); a zero sign would null the vector, keep new instead.
            g = -new if g @ new < 0 else new
    return g


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation matrix turning direction ``a`` onto direction ``b`` about ``a x b`` (``getRMatrix``).

    Args:
        a, b: (3,) non-zero vectors (need not be unit).

    Returns:
        (3, 3) float64 rotation ``R`` with ``R a/|a| = b/|b|``; the identity when they are within 0.1 degree,
        as in the original.

    Raises:
        ValueError: ``a`` and ``b`` are antiparallel, so the axis is undefined (the original returns NaN).
    """
    a = np.asarray(a, dtype=np.float64) / np.linalg.norm(a)
    b = np.asarray(b, dtype=np.float64) / np.linalg.norm(b)
    phi = np.arccos(np.clip(a @ b, -1.0, 1.0))
    if np.rad2deg(phi) <= 0.1:
        return np.eye(3)
    axis = np.cross(a, b)
    axis_norm = np.linalg.norm(axis)
    if axis_norm == 0.0:
        raise ValueError(f"cannot rotate {a} onto the opposite direction {b}: the rotation axis is undefined")
    k = axis / axis_norm
    skew = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    # Rodrigues' formula.
    return np.eye(3) + np.sin(phi) * skew + (1.0 - np.cos(phi)) * (skew @ skew)


def height_above_ground(points_cm: np.ndarray, gravity: np.ndarray) -> np.ndarray:
    """Height of each point above the lowest point of the scene, along gravity.

    The cloud is rotated so that gravity becomes the camera's y axis; height is ``-y``. The ground is the
    lowest point, unless that is less than 90 cm below the camera: then the floor is out of view and is
    assumed to lie 130 cm below the camera.

    Args:
        points_cm: (H, W, 3) camera-frame points, centimetres.
        gravity: (3,) downward gravity direction, camera frame (see :func:`estimate_gravity`).

    Returns:
        (H, W) float64 height in centimetres (>= 0 except where NaN points give NaN).
    """
    r = rotation_between(np.array([0.0, 1.0, 0.0]), gravity)
    # R maps the y axis onto gravity, so R^T maps gravity onto y: row 1 of R^T is column 1 of R.
    height = -(points_cm @ r[:, 1])
    lowest = np.nanmin(height)
    if lowest > _FLOOR_MIN_DROP_CM:
        lowest = _ASSUMED_FLOOR_CM
    return height - lowest


def angle_with_gravity(normals: np.ndarray, gravity: np.ndarray) -> np.ndarray:
    """Angle between each normal and the downward gravity direction.

    Args:
        normals: (H, W, 3) unit normals (NaN where unknown).
        gravity: (3,) unit downward gravity direction.

    Returns:
        (H, W) float64 degrees in [0, 180]; 180 where the normal is NaN, as MATLAB's ``max(-1, NaN) = -1``
        makes the original do.
    """
    cos = normals @ np.asarray(gravity, dtype=np.float64)
    cos = np.where(np.isnan(cos), -1.0, np.clip(cos, -1.0, 1.0))
    return np.rad2deg(np.arccos(cos))


def horizontal_disparity(depth_cm: np.ndarray) -> np.ndarray:
    """The disparity channel ``31000 / max(depth_cm, 100)`` (depth below 1 m clamped to 1 m).

    Args:
        depth_cm: (H, W) depth, centimetres.

    Returns:
        (H, W) float64, in (0, 310].
    """
    return _DISPARITY_NUMERATOR / np.maximum(depth_cm, _MIN_DEPTH_CM)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Convert like MATLAB's ``uint8()``: round half away from zero, saturate to 0..255, NaN to 0."""
    rounded = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return np.clip(np.nan_to_num(rounded, nan=0.0), 0, 255).astype(np.uint8)


def _check_inputs(depth_m: np.ndarray, intrinsics: Intrinsics, raw_depth_m: np.ndarray | None) -> np.ndarray:
    """Validate the inputs of :func:`compute_hha`; return the (H, W) missing-pixel mask."""
    if depth_m.ndim != 2:
        raise DataError(f"depth must be a 2-D (H, W) array of metres, got shape {depth_m.shape}")
    if not np.issubdtype(depth_m.dtype, np.floating):
        raise DataError(
            f"depth must be float metres, got dtype {depth_m.dtype}: convert stored integers first "
            "(shared.imageio.read_depth_m)"
        )
    intrinsics.check_image(depth_m.shape, "depth")
    if not np.isfinite(depth_m).all():
        raise DataError("depth has NaN or infinite values: mark missing depth with 0 instead")
    if depth_m.min() < 0:
        raise DataError(f"depth must be >= 0 metres, got a minimum of {depth_m.min():.4g}")
    if depth_m.max() > _MAX_DEPTH_M:
        raise DataError(
            f"depth goes up to {depth_m.max():.6g}, expected metres (< {_MAX_DEPTH_M:g}): "
            "were millimetres passed? divide by 1000"
        )
    missing = depth_m <= 0
    if raw_depth_m is not None:
        if raw_depth_m.shape != depth_m.shape:
            raise DataError(f"raw depth is {raw_depth_m.shape} but depth is {depth_m.shape}: expected equal shapes")
        missing |= raw_depth_m == 0
    if missing.all():
        raise DataError(f"all {missing.size} depth pixels are missing (0): nothing to encode")
    return missing


def compute_hha(depth_m: np.ndarray, intrinsics: Intrinsics, raw_depth_m: np.ndarray | None = None) -> np.ndarray:
    """Encode a depth map as an HHA image, as the original ``saveHHA`` does.

    Args:
        depth_m: (H, W) float depth in metres, hole-filled (0 = missing).
        intrinsics: camera of this image, of size (H, W).
        raw_depth_m: (H, W) raw sensor depth (any units: only its zeros are used) whose zeros mark pixels the
            sensor did not measure; those pixels are left out of the plane fits. None: every non-zero depth
            pixel counts as measured.

    Returns:
        (H, W, 3) uint8 in RGB order: 0 = horizontal disparity ``31000 / max(depth_cm, 100)``,
        1 = height above the ground in cm, 2 = angle of the normal with gravity in degrees + 38
        (218 where no normal could be fitted); each rounded half away from zero and clipped to 0..255.

    Raises:
        DataError: depth not 2-D float metres (e.g. millimetres), not finite or negative, shape different
            from the raw depth; or every pixel missing.
        ValueError: the intrinsics are for another image size.
    """
    depth_m = np.asarray(depth_m)
    missing = _check_inputs(depth_m, intrinsics, None if raw_depth_m is None else np.asarray(raw_depth_m))
    points = point_cloud_cm(depth_m, intrinsics)
    gravity = estimate_gravity(surface_normals(points, missing, GRAVITY_RADIUS))
    angle = angle_with_gravity(surface_normals(points, missing, ANGLE_RADIUS), gravity)
    hha = np.stack(
        [
            horizontal_disparity(points[..., 2]),
            height_above_ground(points, gravity),
            angle + _ANGLE_OFFSET_DEG,
        ],
        axis=-1,
    )
    return to_uint8(hha)
