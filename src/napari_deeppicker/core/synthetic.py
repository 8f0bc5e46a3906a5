"""Simulated cryo-EM micrographs with exact ground truth.

Used by the tests, the demos, the sample data and as training data for a general model that has
to work on molecules it never saw, hence several shape families, each with random variants.

How a micrograph is made:

1. Particles are 3D blob models (``_phantoms.py``) in uniformly random orientations at random
   non-overlapping positions, projected along z into protein thickness, then phase shift.
2. Amorphous ice adds white phase noise (it draws the Thon rings of the power spectrum); optional
   carbon film (thicker, textured) and crystalline-ice contamination (large, very dark blobs).
3. Weak-phase-object imaging through the CTF (300 kV, random underfocus, amplitude contrast,
   B-factor envelope): particles come out dark on a light background at low resolution.
4. Slowly varying ice thickness, carbon and contamination absorb electrons; Poisson shot noise at
   the given dose turns the intensity into electron counts per pixel.

Ground truth is the centre of mass of each projected particle (its rotation centre), as
``x`` = column and ``y`` = row in pixels of the returned array.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import fft as sfft
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from napari_deeppicker.core import _image_formation as imf
from napari_deeppicker.core._phantoms import (
    DIAMETER_FRACTION,
    SHAPES,
    build_phantom,
    particle_projection,
    render_projections,
)
from napari_deeppicker.core.errors import BoxSizeError, DeepPickerError

__all__ = ["SHAPES", "particle_projection", "simulate_dataset", "simulate_micrograph"]

logger = logging.getLogger(__name__)

DEFOCUS_RANGE_UM = (1.0, 3.5)
"""Range of the uniformly drawn defocus (underfocus) when none is given."""
PARTICLES_PER_BOX64_MEGAPIXEL = 45
"""Default particle count for box 64 on a 1024 x 1024 image; it scales with area / box^2."""
PARTICLE_SIZE_A = 220.0
"""Default particle diameter in Angstrom: sets the default pixel size (see simulate_micrograph)."""
_CANDIDATES_PER_PARTICLE = 40  # random positions tried per requested particle
_BATCH = 256  # candidate positions screened at once


def _image_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    rows, cols = (size, size) if np.isscalar(size) else size
    return int(rows), int(cols)


def _check_arguments(shape_rc, shape, box, dose, n_particles) -> None:
    if shape not in SHAPES:
        raise DeepPickerError(f"Unknown particle shape {shape!r}; choose one of {SHAPES}.")
    if box <= 0 or 2 * box > min(shape_rc):
        raise BoxSizeError(
            f"Box size {box} px must be positive and at most half the image size {shape_rc}."
        )
    if dose <= 0:
        raise DeepPickerError(f"The dose must be positive, got {dose}.")
    if n_particles is not None and n_particles < 0:
        raise DeepPickerError(f"The number of particles must not be negative, got {n_particles}.")


def _check_sizes(pixel_size, diameter) -> None:
    if pixel_size <= 0 or diameter <= 0:
        raise DeepPickerError(
            f"Pixel size ({pixel_size} A) and particle diameter ({diameter} px) must be positive."
        )


def _place_particles(rng, n, shape_rc, edge, min_distance, obstacles, margin) -> np.ndarray:
    """Random centres (x, y) at least ``edge`` from the border, ``min_distance`` apart and at
    least ``margin`` outside every obstacle (carbon, ice)."""
    rows, cols = shape_rc
    tries = rng.uniform(
        (edge, edge), (cols - 1 - edge, rows - 1 - edge), (max(n, 1) * _CANDIDATES_PER_PARTICLE, 2)
    )
    free = np.ones(len(tries), dtype=bool)
    for obstacle in obstacles:
        free &= obstacle.distance(tries[:, 0], tries[:, 1]) < -margin
    accepted = np.empty((n, 2))
    count, limit = 0, min_distance**2
    tries = tries[free]
    # Sequential acceptance, but each batch is first screened against the particles already
    # placed in one vectorised step, so the Python loop only sees plausible candidates.
    for start in range(0, len(tries), _BATCH):
        if count == n:
            break
        batch = tries[start : start + _BATCH]
        if count:
            nearest, _ = cKDTree(accepted[:count]).query(batch, distance_upper_bound=min_distance)
            batch = batch[nearest >= min_distance]
        first = count
        for candidate in batch:
            if count == n:
                break
            if count > first and ((accepted[first:count] - candidate) ** 2).sum(1).min() < limit:
                continue
            accepted[count] = candidate
            count += 1
    if count < n:
        logger.warning("Only %d of %d particles fit in the free area of the image.", count, n)
    return accepted[:count]


def simulate_micrograph(
    size: int | tuple[int, int] = 1024,
    *,
    shape: str = "globular",
    n_particles: int | None = None,
    box: int = 64,
    defocus_um: float | None = None,
    dose: float = 40.0,
    carbon: bool = False,
    ice: bool = False,
    noise_only: bool = False,
    seed: int = 0,
    diameter: float | None = None,
    shape_seed: int | None = None,
    pixel_size: float | None = None,
    b_factor: float = 80.0,
    min_distance: float | None = None,
    invert: bool = False,
    denoised: bool = False,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Simulate one micrograph and the exact centres of its particles.

    Parameters
    ----------
    size : int or tuple of int
        Image side in pixels, or ``(rows, cols)``.
    shape : str
        Particle shape family, one of ``SHAPES``.
    n_particles : int, optional
        Number of particles; default 45 per 1024 x 1024 px for box 64, scaled by area / box^2.
        Fewer are returned (with a logged warning) when they do not fit.
    box : int
        Box size in pixels; particles keep half a box from the image border.
    defocus_um : float, optional
        Underfocus in micrometres; default uniform in ``DEFOCUS_RANGE_UM``.
    dose : float
        Total electron dose in e/A^2 (expected counts per pixel: dose * pixel_size^2).
    carbon : bool
        Add a carbon film beyond a wavy edge (no particles on it).
    ice : bool
        Add one to three large, dark crystalline-ice contaminations (no particles in them).
    noise_only : bool
        No particles: the same ice, CTF and noise as with them, and an empty coordinate table.
    seed : int
        Random seed; the output is a deterministic function of all the arguments.
    diameter : float, optional
        Particle diameter in pixels; default 0.85 x box.
    shape_seed : int, optional
        Draw random shape parameters (a different "molecule" of the family); None gives the
        family's canonical molecule.
    pixel_size : float, optional
        Angstrom per pixel (sets the CTF, the ice texture, the protein's phase, the counts);
        default such that the diameter is ``PARTICLE_SIZE_A`` (4 A per pixel for box 64), as binning
        usually makes particles of a few tens of pixels.
    b_factor : float
        B-factor of the CTF envelope in A^2.
    min_distance : float, optional
        Minimum distance between particle centres in pixels; default the diameter.
    invert : bool
        Mirror the intensities about their mean so that particles are bright.
    denoised : bool
        Make the image look denoised and contrast-equalised: band-pass, 8-bit steps in 0-255.

    Returns
    -------
    image : numpy.ndarray
        ``(rows, cols)`` float32 image (electron counts, or 0-255 when ``denoised``).
    coords : pandas.DataFrame
        Particle centres, columns ``x`` (column) and ``y`` (row), float pixels. The parameters
        actually used (defocus, particle count...) are in ``coords.attrs["simulation"]``.
    """
    shape_rc = _image_shape(size)
    _check_arguments(shape_rc, shape, box, dose, n_particles)
    diameter = DIAMETER_FRACTION * box if diameter is None else float(diameter)
    _check_sizes(1.0 if pixel_size is None else pixel_size, diameter)
    pixel_size = PARTICLE_SIZE_A / diameter if pixel_size is None else float(pixel_size)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)]
    params_rng, place_rng, background_rng, noise_rng = rngs
    if defocus_um is None:
        defocus_um = float(params_rng.uniform(*DEFOCUS_RANGE_UM))
    obstacles = [imf.Carbon.draw(params_rng, shape_rc)] if carbon else []
    if ice:
        n_ice = int(params_rng.integers(1, 4))
        obstacles += [imf.IceBlob.draw(params_rng, shape_rc, diameter) for _ in range(n_ice)]
    if n_particles is None:
        area = shape_rc[0] * shape_rc[1] / 1024**2
        n_particles = round(PARTICLES_PER_BOX64_MEGAPIXEL * area * (64 / box) ** 2)
    centres = np.empty((0, 2))
    if not noise_only:
        distance = diameter if min_distance is None else float(min_distance)
        centres = _place_particles(
            place_rng, int(n_particles), shape_rc, box / 2, distance, obstacles, diameter / 2
        )
    rotations = Rotation.random(len(centres), random_state=place_rng).as_matrix().reshape(-1, 3, 3)
    phantom = build_phantom(shape, shape_seed)
    thickness = render_projections(phantom, centres, rotations, diameter, shape_rc)
    phase = thickness * pixel_size * imf.PHASE_PER_ANGSTROM
    phase += (imf.ICE_PHASE_NOISE / pixel_size) * background_rng.standard_normal(shape_rc)
    # Uneven ice thickness: a few percent of slowly varying absorption.
    absorption = 0.015 * imf.smooth_field(shape_rc, min(shape_rc) / 3, background_rng)
    imf.add_obstacles(obstacles, phase, absorption, pixel_size, background_rng)
    ctf = imf.ctf_rfft(shape_rc, pixel_size, defocus_um, b_factor=b_factor)
    intensity = 1.0 + 2.0 * sfft.irfft2(sfft.rfft2(phase) * ctf, s=shape_rc)
    intensity *= np.exp(-absorption)
    expected = np.clip(intensity, 0.0, None) * dose * pixel_size**2
    image = imf.shot_noise(expected, noise_rng)
    if invert:
        image = 2.0 * image.mean() - image
    if denoised:
        image = imf.denoised_look(image, diameter)
    coords = pd.DataFrame({"x": centres[:, 0], "y": centres[:, 1]})
    coords.attrs["simulation"] = {
        "seed": int(seed), "shape": shape, "shape_seed": shape_seed, "size": list(shape_rc),
        "box": int(box), "diameter": diameter, "n_particles": len(coords),
        "defocus_um": defocus_um, "dose": float(dose), "pixel_size": float(pixel_size),
        "b_factor": float(b_factor), "carbon": bool(carbon), "ice": bool(ice),
        "noise_only": bool(noise_only), "invert": bool(invert), "denoised": bool(denoised),
    }  # fmt: skip
    return image.astype(np.float32), coords


def simulate_dataset(
    outdir: str | os.PathLike,
    n: int = 4,
    size: int | tuple[int, int] = 1024,
    *,
    seed: int = 0,
    noise_only: bool = False,
    shapes: list[str] | tuple[str, ...] | None = None,
    box: int = 64,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> list[Path]:
    """Write simulated micrographs and their ground truth to a folder.

    Creates ``outdir/micrographs/<stem>.mrc``, ``outdir/coords/<stem>.star`` (RELION STAR, one
    file per micrograph, empty for noise-only micrographs) and ``outdir/simulation.json`` with
    the parameters of every micrograph (shape, defocus, dose, seed...), each of which can be
    regenerated alone with :func:`simulate_micrograph` and those parameters.

    Parameters
    ----------
    outdir : str or os.PathLike
        Output folder (created if needed; existing files of the same names are replaced).
    n : int
        Number of micrographs.
    size : int or tuple of int
        Image side in pixels, or ``(rows, cols)``.
    seed : int
        Seed of the whole dataset; micrograph ``i`` gets its own seed derived from it.
    noise_only : bool
        Micrographs without particles (stems ``noise_000``...).
    shapes : str or sequence of str, optional
        Shape families used in turn (micrograph ``i`` gets ``shapes[i % len(shapes)]``);
        default all of ``SHAPES``.
    box : int
        Box size in pixels.
    progress : callable, optional
        Called as ``progress(done, n)`` after each micrograph.
    **options
        Any other keyword argument of :func:`simulate_micrograph` (``dose``, ``defocus_um``,
        ``carbon``, ``ice``, ``shape_seed``, ``pixel_size``, ``denoised``, ``invert``...).

    Returns
    -------
    list of pathlib.Path
        The micrograph files, in order.
    """
    from napari_deeppicker.core.io import atomic_write, write_coordinates, write_micrograph

    shapes = SHAPES if shapes is None else (shapes,) if isinstance(shapes, str) else tuple(shapes)
    if not shapes or any(s not in SHAPES for s in shapes):
        raise DeepPickerError(f"Unknown or no particle shapes {shapes!r}; choose from {SHAPES}.")
    if n < 0:
        raise DeepPickerError(f"The number of micrographs must not be negative, got {n}.")
    outdir = Path(outdir)
    mic_dir, coord_dir = outdir / "micrographs", outdir / "coords"
    mic_dir.mkdir(parents=True, exist_ok=True)
    coord_dir.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).generate_state(n) if n else []
    paths, records = [], []
    for i in range(n):
        shape = shapes[i % len(shapes)]
        image, coords = simulate_micrograph(
            size, shape=shape, box=box, noise_only=noise_only, seed=int(seeds[i]), **options
        )
        params = coords.attrs["simulation"]
        stem = f"{'noise' if noise_only else shape}_{i:03d}"
        path = mic_dir / f"{stem}.mrc"
        write_micrograph(path, image, pixel_size=params["pixel_size"])
        write_coordinates(coords, coord_dir / f"{stem}.star", fmt="star", micrograph_name=path.name)
        paths.append(path)
        records.append({"stem": stem, **params})
        logger.debug("simulated %s: %d particles", stem, len(coords))
        if progress is not None:
            progress(i + 1, n)
    summary = {"seed": int(seed), "n": int(n), "box": int(box), "micrographs": records}
    with atomic_write(outdir / "simulation.json") as fh:
        json.dump(summary, fh, indent=2)
    logger.info("wrote %d simulated micrographs to %s", n, outdir)
    return paths
