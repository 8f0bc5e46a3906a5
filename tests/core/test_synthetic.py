"""Tests of the simulated micrographs (core/synthetic.py)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from scipy import ndimage, stats
from scipy.spatial.distance import pdist
from scipy.spatial.transform import Rotation

from napari_deeppicker.core.errors import BoxSizeError, DeepPickerError
from napari_deeppicker.core.synthetic import (
    SHAPES,
    particle_projection,
    simulate_dataset,
    simulate_micrograph,
)

SIZE = 384
BOX = 48
DIAMETER = 0.85 * BOX
WAVELENGTH_300KV = 0.019687  # Angstrom


def local_contrast(image, xy, diameter):
    """Mean in a disc of radius 0.4 d minus the mean in the ring 0.8 d - 1.2 d around each point."""
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]]
    values = []
    for x, y in xy:
        r2 = ((cols - x) ** 2 + (rows - y) ** 2) / diameter**2
        values.append(image[r2 <= 0.16].mean() - image[(r2 >= 0.64) & (r2 <= 1.44)].mean())
    return np.array(values)


def background_points(coords, shape, n, clearance, seed=0):
    """Random points at least ``clearance`` from every particle and from the border."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(clearance, np.array(shape[::-1]) - 1 - clearance, (50 * n, 2))
    if len(coords):
        gaps = np.min(np.hypot(*(points[:, None, :] - coords[["x", "y"]].to_numpy()).T), axis=0)
        points = points[gaps >= clearance]
    assert len(points) >= n
    return points[:n]


def particle_contrast(image, coords, diameter):
    """Local contrast of particles and of empty places, in units of the latter's spread.

    After a mild low-pass, each particle's disc is compared with the ring around it, and so is
    every one of 40 random places at least 1.2 diameters from any particle.
    """
    smooth = ndimage.gaussian_filter(image.astype(float), diameter / 10)
    on = local_contrast(smooth, coords[["x", "y"]].to_numpy(), diameter)
    empty = background_points(coords, image.shape, 40, 1.2 * diameter)
    off = local_contrast(smooth, empty, diameter)
    return (on - off.mean()) / off.std(), on, off


def radial_power(image):
    """Radially averaged power spectrum and its frequencies (cycles per pixel)."""
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    fy = np.fft.fftfreq(image.shape[0])[:, None]
    fx = np.fft.fftfreq(image.shape[1])[None, :]
    bins = np.rint(np.hypot(fy, fx) * image.shape[0]).astype(int).ravel()
    profile = np.bincount(bins, power.ravel()) / np.bincount(bins)
    return np.arange(len(profile)) / image.shape[0], profile


def test_deterministic_for_a_seed():
    first = simulate_micrograph(SIZE, box=BOX, shape="ring", seed=3, carbon=True)
    again = simulate_micrograph(SIZE, box=BOX, shape="ring", seed=3, carbon=True)
    other = simulate_micrograph(SIZE, box=BOX, shape="ring", seed=4, carbon=True)
    np.testing.assert_array_equal(first[0], again[0])
    pd.testing.assert_frame_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
    assert not np.allclose(first[1]["x"].to_numpy()[:5], other[1]["x"].to_numpy()[:5])


def test_image_and_coordinates_follow_the_conventions():
    image, coords = simulate_micrograph((SIZE, 512), box=BOX, seed=1)
    assert image.dtype == np.float32 and image.shape == (SIZE, 512)
    assert np.isfinite(image).all() and image.std() > 0
    assert list(coords.columns) == ["x", "y"] and coords.dtypes.eq(np.float64).all()
    # Default density: 45 particles per 1024^2 px at box 64, scaled by area and 1 / box^2.
    assert len(coords) == round(45 * SIZE * 512 / 1024**2 * (64 / BOX) ** 2)
    assert coords["x"].between(BOX / 2, 512 - 1 - BOX / 2).all()
    assert coords["y"].between(BOX / 2, SIZE - 1 - BOX / 2).all()
    assert pdist(coords.to_numpy()).min() >= DIAMETER
    # Centres are real numbers, not pixel indices.
    assert (np.abs(coords.to_numpy() - np.rint(coords.to_numpy())) > 1e-3).any()


def test_min_distance_and_count_are_honoured():
    _, coords = simulate_micrograph(SIZE, box=BOX, n_particles=12, min_distance=80.0, seed=2)
    assert len(coords) == 12
    assert pdist(coords.to_numpy()).min() >= 80.0


def test_too_many_particles_returns_those_that_fit(caplog):
    with caplog.at_level(logging.WARNING, logger="napari_deeppicker.core.synthetic"):
        _, coords = simulate_micrograph(256, box=32, n_particles=500, seed=0)
    assert 20 < len(coords) < 500
    assert pdist(coords.to_numpy()).min() >= 0.85 * 32
    assert "fit" in caplog.text


@pytest.mark.parametrize("shape", SHAPES)
def test_particles_are_dark_at_low_resolution(shape):
    image, coords = simulate_micrograph(
        SIZE, box=BOX, shape=shape, seed=7, n_particles=20, defocus_um=2.0
    )
    z, on, off = particle_contrast(image, coords, DIAMETER)
    # Significantly darker than empty places, and most particles are visible on their own.
    assert stats.ttest_ind(on, off, alternative="less").pvalue < 1e-4
    assert z.mean() < -1.0
    assert np.mean(on < np.median(off)) >= 0.75


def test_inverted_particles_are_bright():
    options = dict(box=BOX, seed=7, n_particles=20, defocus_um=2.0)
    image, coords = simulate_micrograph(SIZE, invert=True, **options)
    dark, coords_dark = simulate_micrograph(SIZE, **options)
    pd.testing.assert_frame_equal(coords, coords_dark)
    z, on, off = particle_contrast(image, coords, DIAMETER)
    assert stats.ttest_ind(on, off, alternative="greater").pvalue < 1e-4
    assert z.mean() > 1.0
    assert np.mean(on > np.median(off)) >= 0.75
    assert abs(image.mean() - dark.mean()) < 1e-3 * dark.mean()


def test_denoised_look_is_8_bit_with_dark_particles():
    options = dict(box=BOX, seed=7, n_particles=20, defocus_um=2.0)
    image, coords = simulate_micrograph(SIZE, denoised=True, **options)
    assert image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 255
    np.testing.assert_array_equal(image, np.rint(image))
    assert 110 < np.median(image) < 146
    z, on, off = particle_contrast(image, coords, DIAMETER)
    assert z.mean() < -2.0 and np.mean(on < np.median(off)) >= 0.9
    # Strongly low-passed: neighbouring pixels are highly correlated, unlike in a raw image.
    raw, _ = simulate_micrograph(SIZE, **options)
    for img, low, high in ((image, 0.8, 1.0), (raw, -0.2, 0.3)):
        c = np.corrcoef(img[:, :-1].ravel(), img[:, 1:].ravel())[0, 1]
        assert low < c < high


def test_noise_only_has_no_particles_and_the_same_background():
    noise, empty = simulate_micrograph(SIZE, box=BOX, noise_only=True, defocus_um=2.0, seed=7)
    image, coords = simulate_micrograph(SIZE, box=BOX, defocus_um=2.0, seed=8)
    assert empty.empty and list(empty.columns) == ["x", "y"] and len(coords) > 0
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    far = np.ones((SIZE, SIZE), dtype=bool)
    for x, y in coords.to_numpy():
        far &= (cols - x) ** 2 + (rows - y) ** 2 > DIAMETER**2
    background = image[far]
    assert abs(noise.mean() - background.mean()) < 0.01 * background.mean()
    assert abs(noise.std() / background.std() - 1.0) < 0.05
    # Same noise spectrum away from the lowest frequencies.
    freq, p_noise = radial_power(noise)
    _, p_image = radial_power(image)
    band = (freq > 0.15) & (freq < 0.5)
    assert abs(p_noise[band].mean() / p_image[band].mean() - 1.0) < 0.1
    # The same seed gives the same micrograph without its particles.
    twin, _ = simulate_micrograph(SIZE, box=BOX, defocus_um=2.0, seed=7)
    assert np.corrcoef(noise[far], twin[far])[0, 1] > 0.5


def test_defocus_moves_the_first_ctf_zero():
    minima = {}
    for defocus in (1.0, 3.0):
        image, coords = simulate_micrograph(512, box=64, noise_only=True, defocus_um=defocus)
        pixel_size = coords.attrs["simulation"]["pixel_size"]
        freq, power = radial_power(image)
        power = np.convolve(power, np.ones(5) / 5, mode="same")
        # First zero of sin(chi + asin(0.07)), Cs neglected, in cycles per pixel.
        expected = np.sqrt((np.pi - np.arcsin(0.07)) / (np.pi * WAVELENGTH_300KV * defocus * 1e4))
        expected *= pixel_size
        window = (freq > 0.6 * expected) & (freq < 1.4 * expected)
        minima[defocus] = freq[window][np.argmin(power[window])]
        assert minima[defocus] == pytest.approx(expected, rel=0.06)
        assert power[window].min() < 0.7 * power[window].max()
    assert minima[3.0] < 0.7 * minima[1.0]


def test_random_defocus_is_recorded_and_in_range():
    values = [
        simulate_micrograph(256, box=32, seed=s)[1].attrs["simulation"]["defocus_um"]
        for s in range(6)
    ]
    assert all(1.0 <= v <= 3.5 for v in values) and len(set(values)) == 6


def test_every_shape_renders_centred_and_differs():
    box = 64
    rotations = Rotation.random(8, random_state=0).as_matrix()
    views = {}
    for shape in SHAPES:
        views[shape] = []
        for rotation in [None, *rotations]:
            image = particle_projection(shape, box, rotation=rotation)
            assert image.shape == (box, box) and np.isfinite(image).all() and image.min() >= 0
            assert image.sum() > 0
            # The ground-truth centre is the projection's centre of mass, whatever the view.
            com = ndimage.center_of_mass(image)
            np.testing.assert_allclose(com, [(box - 1) / 2] * 2, atol=0.05)
            views[shape].append(image.ravel())
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1 :]:
            # Same orientations, different molecules: the views must not be alike on average.
            similarity = np.mean([np.corrcoef(u, v)[0, 1] for u, v in zip(views[a], views[b])])
            assert similarity < 0.95, (a, b)


def test_hollow_and_small_shapes():
    ring = particle_projection("ring", 64)  # identity rotation: the ring lies face-on
    shell = particle_projection("shell", 64)
    for hollow in (ring, shell):
        assert hollow[31:33, 31:33].mean() < 0.6 * hollow.max()

    def gyration(image):
        rows, cols = np.mgrid[0:64, 0:64]
        radius2 = (rows - 31.5) ** 2 + (cols - 31.5) ** 2
        return np.sqrt((radius2 * image).sum() / image.sum())

    small, globular = particle_projection("small", 64), particle_projection("globular", 64)
    assert gyration(small) < 0.7 * gyration(globular)
    elongated = particle_projection("elongated", 64)
    moments = np.linalg.eigvalsh(np.cov(np.argwhere(elongated > 0.2 * elongated.max()).T))
    assert moments[1] > 3 * moments[0]


def test_shape_variants_are_deterministic_and_different():
    canonical = particle_projection("multilobe", 64)
    variant = particle_projection("multilobe", 64, shape_seed=11)
    np.testing.assert_array_equal(variant, particle_projection("multilobe", 64, shape_seed=11))
    assert not np.allclose(canonical, variant)
    assert not np.allclose(variant, particle_projection("multilobe", 64, shape_seed=12))
    a, _ = simulate_micrograph(256, box=32, shape="dumbbell", shape_seed=1, seed=0)
    b, _ = simulate_micrograph(256, box=32, shape="dumbbell", shape_seed=2, seed=0)
    assert not np.array_equal(a, b)


def test_contaminants_are_dark_and_free_of_particles():
    clean, _ = simulate_micrograph(512, box=BOX, seed=9)
    for option in ("carbon", "ice"):
        image, coords = simulate_micrograph(512, box=BOX, seed=9, **{option: True})
        smooth = ndimage.gaussian_filter(image.astype(float), DIAMETER)
        level = np.median(smooth)
        dark = 0.9 if option == "carbon" else 0.6
        assert np.mean(smooth < dark * level) > 0.02, option
        assert len(coords) > 0 and image.mean() < clean.mean()
        at_particles = smooth[np.rint(coords["y"]).astype(int), np.rint(coords["x"]).astype(int)]
        assert at_particles.min() > 0.93 * level, option


def test_bad_arguments_raise_deeppicker_errors(tmp_path):
    with pytest.raises(DeepPickerError, match="shape"):
        simulate_micrograph(256, shape="banana")
    with pytest.raises(BoxSizeError):
        simulate_micrograph(256, box=200)
    with pytest.raises(BoxSizeError):
        simulate_micrograph(256, box=0)
    with pytest.raises(DeepPickerError, match="dose"):
        simulate_micrograph(256, box=32, dose=0)
    with pytest.raises(DeepPickerError, match="Pixel size"):
        simulate_micrograph(256, box=32, pixel_size=-1.0)
    with pytest.raises(DeepPickerError, match="negative"):
        simulate_micrograph(256, box=32, n_particles=-3)
    with pytest.raises(DeepPickerError, match="shapes"):
        simulate_dataset(tmp_path, n=1, size=256, box=32, shapes=["globular", "cube"])


def test_simulate_dataset_writes_readable_files(tmp_path):
    progress = []
    paths = simulate_dataset(
        tmp_path, n=3, size=256, seed=4, shapes=["ring", "globular"], box=32,
        dose=30.0, progress=lambda done, total: progress.append((done, total)),
    )  # fmt: skip
    assert [p.name for p in paths] == ["ring_000.mrc", "globular_001.mrc", "ring_002.mrc"]
    assert progress == [(1, 3), (2, 3), (3, 3)]
    summary = json.loads((tmp_path / "simulation.json").read_text())
    assert summary["seed"] == 4 and len(summary["micrographs"]) == 3
    assert sorted(p.name for p in (tmp_path / "coords").iterdir()) == [
        "globular_001.star", "ring_000.star", "ring_002.star"
    ]  # fmt: skip
    defoci = set()
    for path, record in zip(paths, summary["micrographs"]):
        with mrcfile.open(path) as mrc:
            data = mrc.data.copy()
            assert float(mrc.voxel_size.x) == pytest.approx(record["pixel_size"], rel=1e-5)
        assert data.shape == (256, 256) and data.dtype == np.float32
        star = starfile.read(tmp_path / "coords" / f"{path.stem}.star")
        assert len(star) == record["n_particles"] > 0
        assert record["dose"] == 30.0 and record["shape"] == path.stem.split("_")[0]
        defoci.add(record["defocus_um"])
        # Each micrograph is reproducible on its own from its recorded parameters.
        image, coords = simulate_micrograph(
            256, box=32, shape=record["shape"], seed=record["seed"], dose=record["dose"]
        )
        np.testing.assert_array_equal(image, data)
        np.testing.assert_allclose(star["rlnCoordinateX"], coords["x"], atol=1e-3)
        np.testing.assert_allclose(star["rlnCoordinateY"], coords["y"], atol=1e-3)
    assert len(defoci) == 3
    # A single shape may be given as a plain string.
    single = simulate_dataset(tmp_path / "single", n=1, size=256, box=32, shapes="shell")
    assert [p.name for p in single] == ["shell_000.mrc"]


def test_noise_only_dataset_has_empty_coordinate_files(tmp_path):
    paths = simulate_dataset(tmp_path, n=2, size=256, box=32, noise_only=True)
    assert [p.stem for p in paths] == ["noise_000", "noise_001"]
    for path in paths:
        assert len(starfile.read(tmp_path / "coords" / f"{path.stem}.star")) == 0
        assert mrcfile.read(path).std() > 0


def test_full_size_micrograph_is_fast():
    simulate_micrograph(256, box=32)
    start = time.perf_counter()
    image, coords = simulate_micrograph(1024, box=64, seed=1)
    assert time.perf_counter() - start < 3.0  # about 0.3 s on one idle core
    assert image.shape == (1024, 1024) and len(coords) == 45


def test_importing_synthetic_does_not_load_torch():
    code = "import sys, napari_deeppicker.core.synthetic; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
