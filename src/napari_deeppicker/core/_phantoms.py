"""3D phantom particles made of anisotropic Gaussian blobs, and their exact projections.

A phantom is expressed in units of its diameter: it fits in a sphere of radius 0.5 centred on its
centre of mass. Rotating blob centres and covariances is exact and far cheaper than rotating a
voxel volume, and the projection of a 3D Gaussian along z is the 2D Gaussian of its (x, y)
marginal, so every projection is rendered analytically on the pixel grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_deeppicker.core.errors import BoxSizeError, DeepPickerError

SHAPES = ("globular", "elongated", "dumbbell", "ring", "shell", "multilobe", "small")
DIAMETER_FRACTION = 0.85
"""Default particle diameter as a fraction of the box (as in the real datasets: 27/32, 56/64)."""

# Elements evaluated at once when rendering: bounds memory to a few tens of MB.
_CHUNK_ELEMENTS = 2_000_000
# Blobs are evaluated on a square window of this many standard deviations (> 99 % of the mass).
_TRUNCATE = 3.0


@dataclass(frozen=True)
class Phantom:
    """A particle density as a sum of 3D Gaussian blobs.

    Attributes
    ----------
    shape : str
        Name of the shape family (one of ``SHAPES``).
    centres : numpy.ndarray
        ``(k, 3)`` blob centres (x, y, z) in diameters; the centre of mass is the origin.
    covariances : numpy.ndarray
        ``(k, 3, 3)`` blob covariances in squared diameters.
    weights : numpy.ndarray
        ``(k,)`` blob volumes in cubic diameters (the density peaks at about 1).
    """

    shape: str
    centres: np.ndarray
    covariances: np.ndarray
    weights: np.ndarray


def _covariances(sigmas: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
    """Covariances ``A diag(s^2) A^T`` from per-blob sigmas ``(k, 3)`` and frames ``(k, 3, 3)``."""
    diag = np.einsum("ki,ij->kij", sigmas**2, np.eye(3))
    if axes is None:
        return diag
    return axes @ diag @ np.transpose(axes, (0, 2, 1))


def _frames_along(directions: np.ndarray) -> np.ndarray:
    """Orthonormal frames whose first axis is each (unit) direction, shape ``(k, 3, 3)``."""
    first = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    helper = np.where(np.abs(first[:, [2]]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    second = np.cross(first, helper)
    second /= np.linalg.norm(second, axis=1, keepdims=True)
    third = np.cross(first, second)
    return np.stack([first, second, third], axis=2)


def _fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` nearly uniform unit vectors."""
    i = np.arange(n) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / n)
    azimuth = np.pi * (1.0 + 5.0**0.5) * i
    return np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=1
    )


def _lumpy_ball(rng, n: int, radius: float, sigma: float, core: float):
    """Blobs scattered in a ball plus one central blob of sigma ``core``."""
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    centres = directions * radius * rng.uniform(0.0, 1.0, (n, 1)) ** (1 / 3)
    sigmas = sigma * rng.uniform(0.8, 1.2, (n, 3))
    centres = np.vstack([centres, np.zeros((1, 3))])
    sigmas = np.vstack([sigmas, np.full((1, 3), core)])
    return centres, _covariances(sigmas)


def _pick(rng, vary: bool, nominal: float, low: float, high: float) -> float:
    return float(rng.uniform(low, high)) if vary else nominal


def _globular(rng, vary: bool, scale: float = 1.0):
    n = int(rng.integers(14, 40)) if vary else 24
    radius = _pick(rng, vary, 0.27, 0.22, 0.3) * scale
    sigma = _pick(rng, vary, 0.09, 0.07, 0.11) * scale
    centres, covs = _lumpy_ball(rng, n, radius, sigma, 0.14 * scale)
    stretch = np.diag(rng.uniform(0.85, 1.15, 3) if vary else [1.1, 1.0, 0.9])
    return centres @ stretch, stretch @ covs @ stretch


def _small(rng, vary: bool):
    return _globular(rng, vary, scale=_pick(rng, vary, 0.6, 0.45, 0.7))


def _elongated(rng, vary: bool):
    aspect = _pick(rng, vary, 2.6, 1.8, 4.0)
    length = 0.8
    thick = length / aspect / 2.0
    n = int(np.ceil(length / thick)) + 1
    t = np.linspace(-length / 2 + thick, length / 2 - thick, n)
    bend = _pick(rng, vary, 0.0, -0.5, 0.5)
    centres = np.stack([t, rng.normal(0, 0.15 * thick, n), bend * (t**2 - 0.04)], axis=1)
    sigmas = np.column_stack(
        [np.full(n, 0.8 * thick), np.full(n, 0.6 * thick), np.full(n, 0.6 * thick)]
    ) * rng.uniform(0.85, 1.15, (n, 1))
    return centres, _covariances(sigmas)


def _dumbbell(rng, vary: bool):
    half = _pick(rng, vary, 0.21, 0.18, 0.24)
    ratio = _pick(rng, vary, 0.85, 0.65, 1.0)
    parts = []
    for sign, size in ((-1.0, 1.0), (1.0, ratio)):
        centres, covs = _lumpy_ball(rng, 10, 0.13 * size, 0.09 * size, 0.13 * size)
        parts.append((centres + [sign * half, 0.0, 0.0], covs))
    neck = np.column_stack([np.linspace(-half / 2, half / 2, 3), np.zeros((3, 2))])
    parts.append((neck, _covariances(np.full((3, 3), 0.05))))
    return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])


def _ring(rng, vary: bool):
    radius = _pick(rng, vary, 0.33, 0.28, 0.37)
    tube = _pick(rng, vary, 0.07, 0.05, 0.09)
    ellipticity = _pick(rng, vary, 1.0, 0.85, 1.0)
    n = int(np.ceil(2 * np.pi * radius / tube))
    angle = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    centres = np.stack(
        [radius * np.cos(angle), ellipticity * radius * np.sin(angle), np.zeros(n)], axis=1
    )
    tangents = np.stack([-np.sin(angle), ellipticity * np.cos(angle), np.zeros(n)], axis=1)
    sigmas = np.column_stack([np.full(n, 1.3 * tube), np.full(n, tube), np.full(n, tube)])
    return centres, _covariances(sigmas, _frames_along(tangents))


def _shell(rng, vary: bool):
    radius = _pick(rng, vary, 0.38, 0.3, 0.4)
    thick = _pick(rng, vary, 0.05, 0.04, 0.07)
    # Flat blobs tangent to the sphere: few of them tile it smoothly.
    n = int(np.ceil(4 * np.pi * radius**2 / (2.6 * thick) ** 2))
    normals = _fibonacci_sphere(n)
    sigmas = np.column_stack([np.full(n, thick), np.full(n, 2.4 * thick), np.full(n, 2.4 * thick)])
    return normals * radius, _covariances(sigmas, _frames_along(normals))


def _multilobe(rng, vary: bool):
    n_lobes = int(rng.integers(3, 7)) if vary else 4
    distance = _pick(rng, vary, 0.26, 0.22, 0.29)
    size = _pick(rng, vary, 1.2, 0.9, 1.3)
    if n_lobes == 3:
        angle = 2 * np.pi * np.arange(3) / 3
        directions = np.stack([np.cos(angle), np.sin(angle), np.zeros(3)], axis=1)
    else:
        directions = _fibonacci_sphere(n_lobes)
    parts = [(np.zeros((1, 3)), _covariances(np.full((1, 3), 0.08)))]
    for direction in directions:
        centres, covs = _lumpy_ball(rng, 6, 0.07 * size, 0.06 * size, 0.09 * size)
        parts.append((centres + distance * direction, covs))
    return np.vstack([p[0] for p in parts]), np.vstack([p[1] for p in parts])


_BUILDERS = {
    "globular": _globular,
    "elongated": _elongated,
    "dumbbell": _dumbbell,
    "ring": _ring,
    "shell": _shell,
    "multilobe": _multilobe,
    "small": _small,
}


def build_phantom(shape: str, variant: int | None = None) -> Phantom:
    """Build the 3D blob model of one shape family.

    ``variant=None`` gives the shape's canonical parameters (still lumpy, always the same);
    an integer draws random parameters (size ratios, number of lobes, aspect ratio...) so that a
    training mixture can hold many molecules of each family.
    """
    family = SHAPES.index(shape)
    seed = [family, 0] if variant is None else [family, 1, int(variant)]
    rng = np.random.default_rng(seed)
    centres, covs = _BUILDERS[shape](rng, variant is not None)
    # A blob's volume at unit peak density; lumps get slightly different densities.
    weights = (2 * np.pi) ** 1.5 * np.sqrt(np.linalg.det(covs)) * rng.uniform(0.8, 1.2, len(covs))
    centres = centres - weights @ centres / weights.sum()
    # Overlapping blobs add up: scale so that the density at a typical blob centre is 1.
    diff = centres[:, None, :] - centres[None, :, :]
    inv = np.linalg.inv(covs)
    quad = np.einsum("ijk,jkl,ijl->ij", diff, inv, diff)
    norm = weights / ((2 * np.pi) ** 1.5 * np.sqrt(np.linalg.det(covs)))
    density = (norm[None, :] * np.exp(-0.5 * quad)).sum(axis=1)
    weights = weights / np.median(density)
    # Keep everything inside the unit-diameter sphere (two sigmas of the widest blob).
    reach = np.linalg.norm(centres, axis=1) + 2 * np.sqrt(np.linalg.eigvalsh(covs)[:, -1])
    shrink = min(1.0, 0.5 / reach.max())
    return Phantom(shape, centres * shrink, covs * shrink**2, weights * shrink**3)


def render_projections(
    phantom: Phantom,
    centres_xy: np.ndarray,
    rotations: np.ndarray,
    diameter: float,
    image_shape: tuple[int, int],
) -> np.ndarray:
    """Sum of the projections along z of rotated copies of a phantom.

    Parameters
    ----------
    phantom : Phantom
        The particle model.
    centres_xy : numpy.ndarray
        ``(n, 2)`` particle centres (x = column, y = row) in pixels.
    rotations : numpy.ndarray
        ``(n, 3, 3)`` rotation matrices applied to the phantom before projecting.
    diameter : float
        Particle diameter in pixels.
    image_shape : tuple of int
        ``(rows, cols)`` of the output.

    Returns
    -------
    numpy.ndarray
        float64 image of projected volume per pixel area (pixels of thickness).
    """
    rows, cols = image_shape
    if len(centres_xy) == 0:
        return np.zeros(image_shape)
    top = rotations[:, :2, :]
    means = np.einsum("nij,kj->nki", top, phantom.centres) * diameter + centres_xy[:, None, :]
    covs = top[:, None] @ phantom.covariances[None] @ np.transpose(top, (0, 2, 1))[:, None]
    # Integrating over a pixel adds the variance of a uniform unit interval (1/12).
    covs = covs.reshape(-1, 2, 2) * diameter**2 + np.eye(2) / 12.0
    means = means.reshape(-1, 2)
    weights = np.tile(phantom.weights * diameter**3, len(centres_xy))
    det = covs[:, 0, 0] * covs[:, 1, 1] - covs[:, 0, 1] ** 2
    inv_a, inv_b, inv_c = covs[:, 1, 1] / det, -covs[:, 0, 1] / det, covs[:, 0, 0] / det
    halves = np.ceil(_TRUNCATE * np.sqrt(np.linalg.eigvalsh(covs)[:, -1])).astype(int)
    halves = 4 * np.ceil(halves / 4).astype(int)  # few window sizes: few passes over the canvas
    # Render on a padded canvas so that no index needs a bounds check, then crop.
    reach = max(0.0, -means.min(), means[:, 0].max() - cols, means[:, 1].max() - rows)
    pad = int(halves.max() + np.ceil(reach)) + 1
    width = cols + 2 * pad
    flat = np.zeros((rows + 2 * pad) * width)
    norm = weights / (2 * np.pi * np.sqrt(det))
    # Blobs of similar size share a window: few large windows for the few large blobs.
    for half in np.unique(halves):
        group = np.flatnonzero(halves == half)
        offsets = np.arange(-half, half + 1, dtype=np.float32)
        chunk = max(1, _CHUNK_ELEMENTS // len(offsets) ** 2)
        for start in range(0, len(group), chunk):
            part = group[start : start + chunk]
            centre = np.rint(means[part])
            col = centre[:, 0, None] + offsets  # (k, w)
            row = centre[:, 1, None] + offsets
            dx = (col - means[part, 0, None]).astype(np.float32)[:, None, :]
            dy = (row - means[part, 1, None]).astype(np.float32)[:, :, None]
            a, b, c = (v[part, None, None].astype(np.float32) for v in (inv_a, inv_b, inv_c))
            quad = (-0.5 * a) * dx**2 + (-0.5 * c) * dy**2 - b * dx * dy
            values = np.exp(quad, out=quad) * norm[part, None, None].astype(np.float32)
            index = ((row + pad) * width).astype(np.int64)[:, :, None]
            index = index + (col + pad).astype(np.int64)[:, None, :]
            flat += np.bincount(index.ravel(), values.ravel(), minlength=flat.size)
    return flat.reshape(rows + 2 * pad, width)[pad : pad + rows, pad : pad + cols].copy()


def particle_projection(
    shape: str = "globular",
    box: int = 64,
    *,
    diameter: float | None = None,
    rotation: np.ndarray | None = None,
    shape_seed: int | None = None,
) -> np.ndarray:
    """Noise-free projected thickness of one particle centred in a ``box`` x ``box`` image.

    Parameters
    ----------
    shape : str
        Shape family, one of ``SHAPES``.
    box : int
        Side of the returned image in pixels.
    diameter : float, optional
        Particle diameter in pixels; default 0.85 x box.
    rotation : numpy.ndarray, optional
        3 x 3 rotation matrix applied before projecting along z; default the identity.
    shape_seed : int, optional
        Random variant of the family, as in :func:`simulate_micrograph`.

    Returns
    -------
    numpy.ndarray
        ``(box, box)`` float32 projected thickness in pixels; the particle's centre of mass is at
        ``((box - 1) / 2, (box - 1) / 2)``.
    """
    if shape not in SHAPES:
        raise DeepPickerError(f"Unknown particle shape {shape!r}; choose one of {SHAPES}.")
    if box <= 0:
        raise BoxSizeError(f"Box size {box} px must be positive.")
    diameter = DIAMETER_FRACTION * box if diameter is None else float(diameter)
    rotation = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    centre = np.full((1, 2), (box - 1) / 2)
    image = render_projections(
        build_phantom(shape, shape_seed), centre, rotation[None], diameter, (box, box)
    )
    return image.astype(np.float32)
