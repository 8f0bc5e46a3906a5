"""Tests of the sample data: the real micrograph is stored losslessly; both samples load."""

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_deeppicker import _sample_data
from napari_deeppicker._layers import coordinates_from_points
from napari_deeppicker.core import io

ORIGINAL = Path("/work/shared/data/real/EMPIAR-10017-betagal")


def test_packaged_files_are_small_and_complete():
    sample = _sample_data
    for path in (sample.REAL_MICROGRAPH, sample.REAL_COORDINATES, sample.REAL_SECOND_PICKER):
        assert path.is_file()
    assert _sample_data.REAL_MICROGRAPH.stat().st_size < 2_000_000
    with mrcfile.open(_sample_data.REAL_MICROGRAPH, header_only=True) as mrc:
        assert int(mrc.header.mode) == 6  # uint16
    assert len(io.read_coordinates(_sample_data.REAL_SECOND_PICKER)) == 612


@pytest.mark.skipif(not ORIGINAL.is_dir(), reason="the original real data are not on this machine")
def test_real_micrograph_round_trip_is_exact():
    original = io.read_micrograph(ORIGINAL / "micrographs" / f"{_sample_data.REAL_STEM}.mrc")
    mic = _sample_data.load_real_micrograph()
    assert mic.data.dtype == np.float32
    np.testing.assert_array_equal(mic.data, original.data)
    assert mic.pixel_size == original.pixel_size == 7.08
    expert = io.read_coordinates(ORIGINAL / "coords" / f"{_sample_data.REAL_STEM}.star")
    packaged = io.read_coordinates(_sample_data.REAL_COORDINATES)
    np.testing.assert_array_equal(packaged[["x", "y"]], expert[["x", "y"]])


def test_real_sample_opens_with_expert_picks(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-deeppicker", "real")
    image = viewer.layers[_sample_data.REAL_STEM]
    picks = viewer.layers[f"{_sample_data.REAL_STEM} reference"]
    assert image.data.shape == (1024, 1024)
    assert image.metadata["deeppicker"]["pixel_size"] == 7.08
    df = coordinates_from_points(picks)
    expert = io.read_coordinates(_sample_data.REAL_COORDINATES)
    np.testing.assert_array_equal(df[["x", "y"]], expert[["x", "y"]])
    assert df["source"].eq("manual").all() and np.all(picks.size == _sample_data.REAL_BOX)
    low, high = image.contrast_limits
    assert 0 <= low < high <= 254


def test_synthetic_sample_is_the_simulation_with_its_ground_truth():
    from napari_deeppicker.core.synthetic import simulate_micrograph

    (image, image_kwargs, image_type), points_tuple = _sample_data.synthetic_sample()
    points, points_kwargs, points_type = points_tuple
    expected, truth = simulate_micrograph(1024, box=64, seed=_sample_data.SYNTHETIC_SEED)
    assert (image_type, points_type) == ("image", "points")
    np.testing.assert_array_equal(image, expected)
    np.testing.assert_array_equal(points, truth[["y", "x"]].to_numpy())
    assert image_kwargs["name"] == "synthetic" and points_kwargs["name"] == "synthetic reference"
    assert points_kwargs["size"] == 64
    pixel_size = image_kwargs["metadata"]["deeppicker"]["pixel_size"]
    assert pixel_size == truth.attrs["simulation"]["pixel_size"]
