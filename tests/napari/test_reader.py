"""Tests of the readers: micrographs (MRC, MRC stacks, gzip, lazy folders) and coordinates files."""

import mrcfile
import numpy as np
import pandas as pd
import pytest

from napari_deeppicker import _reader, _reader_coords
from napari_deeppicker._layers import (
    coordinates_from_points,
    points_layer_data,
    slices_from_micrographs,
)
from napari_deeppicker.core import io
from napari_deeppicker.core.errors import CoordinatesError, MicrographError

from .conftest import DOT_VALUES, DOTS, as_layer, dots_image, values_at_points

PLUGIN = "napari-deeppicker"


def _only(layer_data):
    assert len(layer_data) == 1
    return layer_data[0]


def test_single_mrc_opens_as_2d_image_in_pixels(dots):
    assert _reader.get_micrograph_reader(str(dots.path)) is _reader.read_micrographs
    data, kwargs, kind = _only(_reader.read_micrographs(str(dots.path)))
    assert kind == "image" and kwargs["name"] == "dots"
    np.testing.assert_array_equal(data, dots.image)
    meta = kwargs["metadata"]["deeppicker"]
    assert meta["pixel_size"] == 2.5 and meta["micrograph"] == "dots"
    assert meta["path"] == str(dots.path)
    assert kwargs["contrast_limits"] == (0.0, 130.0)  # percentiles of a mostly-zero image: min/max


def test_viewer_opens_micrograph_and_coordinates_through_the_plugin(dots, make_napari_viewer):
    star = dots.path.parent / "dots.star"
    io.write_coordinates(dots.coords.assign(score=0.75), star)
    viewer = make_napari_viewer()
    image = viewer.open(dots.path, plugin=PLUGIN)[0]
    points = viewer.open(star, plugin=PLUGIN)[0]
    assert [layer.name for layer in viewer.layers] == ["dots", "dots picks"]
    np.testing.assert_array_equal(image.scale, [1.0, 1.0])
    np.testing.assert_array_equal(image.data, dots.image)
    np.testing.assert_array_equal(values_at_points(image, points), dots.values)


def test_contrast_limits_are_robust_percentiles():
    image = np.random.default_rng(0).normal(size=(300, 400)).astype(np.float32)
    image[0, 0] = 1e6  # a hot pixel must not stretch the contrast
    low, high = _reader.robust_contrast_limits(image)
    np.testing.assert_allclose((low, high), np.percentile(image, _reader.PERCENTILES))
    assert _reader.robust_contrast_limits(np.zeros((4, 4))) == (0.0, 1.0)


def test_gzipped_micrograph(tmp_path):
    image = dots_image(DOTS, DOT_VALUES)
    io.write_micrograph(tmp_path / "mic7.mrc.gz", image, pixel_size=1.25)
    assert _reader.get_micrograph_reader(str(tmp_path / "mic7.mrc.gz")) is not None
    data, kwargs, _ = _only(_reader.read_micrographs(str(tmp_path / "mic7.mrc.gz")))
    assert kwargs["name"] == "mic7" and kwargs["metadata"]["deeppicker"]["pixel_size"] == 1.25
    np.testing.assert_array_equal(data, image)


@pytest.mark.parametrize("name", ["stack.mrcs", "stack.mrc"])
def test_stack_opens_as_3d_image_one_micrograph_per_slice(tmp_path, name):
    stack = np.stack([dots_image(DOTS + i, DOT_VALUES + i) for i in range(3)])
    io.write_micrograph(tmp_path / name, stack, pixel_size=3.0)
    data, kwargs, _ = _only(_reader.read_micrographs(str(tmp_path / name)))
    assert data.shape == (3, 60, 80)
    np.testing.assert_array_equal(data, stack)
    meta = kwargs["metadata"]["deeppicker"]
    assert meta["micrographs"] == ["000001@stack", "000002@stack", "000003@stack"]
    assert meta["pixel_size"] == 3.0


class _ReadCounter:
    """Wraps mrcfile.open / mrcfile.mmap and records every open that reads pixels."""

    def __init__(self, monkeypatch):
        self.paths = []
        for name in ("open", "mmap"):
            original = getattr(mrcfile, name)
            monkeypatch.setattr(mrcfile, name, self._wrap(original))

    def _wrap(self, original):
        def opener(path, *args, **kwargs):
            if not kwargs.get("header_only", False):
                self.paths.append(str(path))
            return original(path, *args, **kwargs)
        return opener


def test_folder_opens_lazily_as_a_dask_stack(dots_folder, monkeypatch):
    import dask.array as da

    folder, images = dots_folder
    reads = _ReadCounter(monkeypatch)
    assert _reader.get_micrograph_reader(str(folder)) is _reader.read_micrographs
    data, kwargs, _ = _only(_reader.read_micrographs(str(folder)))
    assert isinstance(data, da.Array) and data.shape == (3, 60, 80) and data.dtype == np.float32
    assert reads.paths == []  # only headers so far
    meta = kwargs["metadata"]["deeppicker"]
    assert meta["micrographs"] == ["mic_a", "mic_b", "mic_c"] and meta["pixel_size"] == 2.5
    assert kwargs["name"] == "micrographs"
    low, high = kwargs["contrast_limits"]
    assert 0.0 <= low < high <= 1130.0
    np.testing.assert_array_equal(data[1].compute(), images[1])
    assert reads.paths == [str(folder / "mic_b.mrc")]


def test_folder_in_the_viewer_reads_only_shown_slices(dots_folder, monkeypatch, make_napari_viewer):
    folder, images = dots_folder
    viewer = make_napari_viewer()
    reads = _ReadCounter(monkeypatch)
    layer = viewer.open(folder, plugin=PLUGIN)[0]
    shown = int(viewer.dims.current_step[0])
    assert type(layer.data).__name__ == "Array"
    # napari draws slice 0 when the layer is added, then the middle slice; never the whole stack
    assert set(reads.paths) <= {str(folder / "mic_a.mrc"), str(folder / f"mic_{'abc'[shown]}.mrc")}
    assert str(folder / "mic_c.mrc") not in reads.paths


def test_folder_without_header_statistics_takes_contrast_from_the_first_file(
    dots_folder, monkeypatch
):
    folder, images = dots_folder
    for path in sorted(folder.iterdir()):
        with mrcfile.open(path, mode="r+") as mrc:
            mrc.header.dmin, mrc.header.dmax, mrc.header.rms = 0.0, -1.0, -1.0
    reads = _ReadCounter(monkeypatch)
    _, kwargs, _ = _only(_reader.read_micrographs(str(folder)))
    assert reads.paths == [str(folder / "mic_a.mrc")]
    assert kwargs["contrast_limits"] == _reader.robust_contrast_limits(images[0])


def test_folder_of_different_sizes_says_so(tmp_path):
    for stem, shape in (("a", (60, 80)), ("b", (60, 80)), ("c", (64, 64))):
        image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        io.write_micrograph(tmp_path / f"{stem}.mrc", image)
    expected = r"differ in size.*80 x 60 \(2 files.*64 x 64 \(1 files, e.g. c.mrc\)"
    with pytest.raises(MicrographError, match=expected):
        _reader.read_micrographs(str(tmp_path))


def test_reader_declines_what_it_does_not_handle(tmp_path, dots):
    (tmp_path / "empty").mkdir()
    (tmp_path / "image.tif").write_bytes(b"II*\x00")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "notes.txt").write_text("hello world\n")
    for path in ("empty", "image.tif", "missing.mrc"):
        assert _reader.get_micrograph_reader(str(tmp_path / path)) is None
    for path in ("table.csv", "notes.txt", "missing.star", "image.tif"):
        assert _reader_coords.get_coordinates_reader(str(tmp_path / path)) is None
    assert _reader.get_micrograph_reader([str(dots.path), str(tmp_path / "image.tif")]) is None


def test_corrupt_micrograph_raises_the_core_error(tmp_path):
    (tmp_path / "bad.mrc").write_bytes(b"not an mrc file" * 100)
    with pytest.raises(MicrographError, match="bad.mrc"):
        _reader.read_micrographs(str(tmp_path / "bad.mrc"))
    (tmp_path / "bad.star").write_text(
        "data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 x\n")
    with pytest.raises(CoordinatesError, match="bad.star"):
        _reader_coords.read_coordinates_files(str(tmp_path / "bad.star"))


@pytest.mark.parametrize("file_name, fmt", [
    ("dots_autopick.star", "star"), ("dots.box", "box"), ("dots.csv", "csv"), ("dots.txt", "topaz"),
])
def test_coordinates_land_on_the_particles(dots, file_name, fmt):
    coords = dots.coords.assign(score=[0.9, 0.8, 0.7, 0.6])
    path = dots.path.parent / file_name
    name = "dots" if fmt == "topaz" else None
    io.write_coordinates(coords, path, fmt=fmt, box=16, micrograph_name=name)
    assert _reader_coords.get_coordinates_reader(str(path)) is _reader_coords.read_coordinates_files
    image = as_layer(_only(_reader.read_micrographs(str(dots.path))))
    points = as_layer(_only(_reader_coords.read_coordinates_files(str(path))))
    assert points.name == "dots picks"
    np.testing.assert_array_equal(values_at_points(image, points), dots.values)
    df = coordinates_from_points(points)
    if fmt == "box":
        assert points.metadata["deeppicker"]["box"] == 16 and np.all(points.size == 16)
        assert df["source"].eq("manual").all() and df["score"].isna().all()
    else:
        np.testing.assert_array_equal(df["score"], coords["score"])
        assert df["source"].eq("model").all()


def test_multi_micrograph_star_opens_as_3d_points(dots_folder):
    folder, _ = dots_folder
    stems = ("mic_a", "mic_b", "mic_c")
    parts = [(DOTS + i).assign(micrograph=f"{stem}.mrc") for i, stem in enumerate(stems)]
    star = folder.parent / "everything.star"
    io.write_coordinates(pd.concat([parts[2], parts[0], parts[1]], ignore_index=True), star)
    data, kwargs, _ = _only(_reader_coords.read_coordinates_files(str(star)))
    assert data.shape == (12, 3) and kwargs["name"] == "everything picks"
    assert kwargs["metadata"]["deeppicker"]["micrographs"] == ["mic_a", "mic_b", "mic_c"]
    stack = as_layer(_only(_reader.read_micrographs(str(folder))))
    points = as_layer((data, kwargs, "points"))
    expected = np.concatenate([DOT_VALUES + 2000, DOT_VALUES, DOT_VALUES + 1000])
    np.testing.assert_array_equal(values_at_points(stack, points), expected)


def test_partial_star_is_placed_on_a_stack_through_its_names(dots_folder, make_napari_viewer):
    """What a widget does with a file of some of a stack's micrographs (the viewer has both)."""
    folder, _ = dots_folder
    star = folder.parent / "some.star"
    picks = pd.concat([(DOTS + 2).assign(micrograph="mic_c"), DOTS.assign(micrograph="mic_a")])
    io.write_coordinates(picks, star)
    viewer = make_napari_viewer()
    stack = viewer.open(folder, plugin=PLUGIN)[0]
    read = viewer.open(star, plugin=PLUGIN)[0]
    assert sorted(set(read.data[:, 0])) == [0.0, 1.0]  # ranks in the file, not stack slices
    df = slices_from_micrographs(coordinates_from_points(read).drop(columns="slice"),
                                 stack.metadata["deeppicker"]["micrographs"])
    data, kwargs, _ = points_layer_data(df, name="placed", box=8)
    placed = viewer.add_points(data, **kwargs)
    expected = np.concatenate([DOT_VALUES + 2000, DOT_VALUES])
    np.testing.assert_array_equal(values_at_points(stack, placed), expected)
