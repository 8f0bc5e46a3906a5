"""Tests of the writers: layer -> file -> reader keeps coordinates, scores and sources."""

import numpy as np
import pandas as pd
import pytest
from napari.layers import Points

from napari_deeppicker import _reader_coords, _writer
from napari_deeppicker._layers import coordinates_from_points, points_layer_data
from napari_deeppicker.core import io
from napari_deeppicker.core.errors import CoordinatesError

PICKS = pd.DataFrame({
    "x": [10.0, 70.5, 33.25, 5.125],
    "y": [5.0, 20.0, 50.75, 44.0],
    "score": [0.9, np.nan, 0.25, 0.123456789],
    "source": ["model", "manual", "model", "model"],
})


@pytest.fixture(autouse=True, scope="module")
def _discovered_plugins():
    """napari finds writers through npe2's registry, filled when a viewer starts: fill it here so
    that these tests do not depend on another test having opened a viewer first."""
    from npe2 import PluginManager

    PluginManager.instance().discover()


def _layer(df, **kwargs):
    data, meta, _ = points_layer_data(df, **{"name": "mic1 picks", "box": 24, **kwargs})
    return Points(data, **meta)


def _read_back(path):
    data, kwargs, _ = _reader_coords.read_coordinates_file(path)
    return coordinates_from_points(data, kwargs["features"], kwargs["metadata"]), kwargs


@pytest.mark.parametrize("ext", [".star", ".csv"])
def test_round_trip_keeps_coordinates_scores_and_sources(tmp_path, ext):
    layer = _layer(PICKS, metadata={"micrograph": "mic1", "pixel_size": 1.7})
    layer.add([12.0, 13.5])  # a manual point
    path = tmp_path / f"out{ext}"
    written = layer.save(str(path), plugin="napari-deeppicker")
    assert written == [str(path)] and path.is_file()
    back, kwargs = _read_back(path)
    expected = coordinates_from_points(layer)
    columns = ["x", "y", "score", "source"]
    pd.testing.assert_frame_equal(back[columns], expected[columns])
    assert back["micrograph"].eq("mic1").all() and kwargs["name"] == "mic1 picks"
    if ext == ".star":
        text = path.read_text()
        for label in ("data_optics", "_rlnMicrographName", "_rlnAutopickFigureOfMerit"):
            assert label in text
        assert kwargs["metadata"]["deeppicker"]["pixel_size"] == 1.7


def test_star_of_manual_points_has_no_score_column(tmp_path):
    layer = _layer(PICKS[["x", "y"]], source="manual")
    _writer.write_star(str(tmp_path / "m.star"), layer.data, layer.as_layer_data_tuple()[1])
    assert "_rlnAutopickFigureOfMerit" not in (tmp_path / "m.star").read_text()
    back, _ = _read_back(tmp_path / "m.star")
    np.testing.assert_array_equal(back[["x", "y"]], PICKS[["x", "y"]])
    assert back["source"].eq("manual").all()


def test_box_uses_the_box_size_from_metadata_or_point_size(tmp_path):
    layer = _layer(PICKS, box=24)
    meta = layer.as_layer_data_tuple()[1]
    assert _writer.write_box(str(tmp_path / "a.box"), layer.data, meta) == [str(tmp_path / "a.box")]
    df = io.read_coordinates(tmp_path / "a.box")
    assert df.attrs["box"] == 24
    np.testing.assert_array_equal(df[["x", "y"]], PICKS[["x", "y"]])
    meta["metadata"] = {}
    meta["size"] = np.full(len(layer.data), 30.0)
    _writer.write_box(str(tmp_path / "b.box"), layer.data, meta)
    assert io.read_coordinates(tmp_path / "b.box").attrs["box"] == 30


def test_stack_points_round_trip_through_star_and_csv(tmp_path):
    df = PICKS.assign(slice=[0, 1, 2, 1])
    layer = _layer(df, metadata={"micrographs": ["mic_a", "mic_b", "mic_c"]})
    meta = layer.as_layer_data_tuple()[1]
    for name in ("stack.star", "stack.csv"):
        getattr(_writer, f"write_{name.split('.')[1]}")(str(tmp_path / name), layer.data, meta)
        back, kwargs = _read_back(tmp_path / name)
        columns = ["x", "y", "score", "source", "slice"]
        pd.testing.assert_frame_equal(back[columns], df, check_dtype=False)
        assert back["micrograph"].tolist() == ["mic_a", "mic_b", "mic_c", "mic_b"]
        assert kwargs["metadata"]["deeppicker"]["micrographs"] == ["mic_a", "mic_b", "mic_c"]
    with pytest.raises(CoordinatesError, match="BOX file holds one micrograph"):
        _writer.write_box(str(tmp_path / "stack.box"), layer.data, meta)
    assert not (tmp_path / "stack.box").exists()


def test_stack_points_without_names_get_slice_names(tmp_path):
    layer = _layer(PICKS.assign(slice=[0, 1, 1, 0]))
    _writer.write_star(str(tmp_path / "s.star"), layer.data, layer.as_layer_data_tuple()[1])
    names = sorted(set(io.read_coordinates(tmp_path / "s.star")["micrograph"]))
    assert names == ["slice_00000", "slice_00001"]


def test_points_hidden_by_the_threshold_are_not_written(tmp_path):
    layer = _layer(PICKS)
    layer.shown = [True, True, False, True]  # the slider hid the 0.25 pick
    path = tmp_path / "out.star"
    layer.save(str(path), plugin="napari-deeppicker")
    back, _ = _read_back(path)
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), PICKS.loc[[0, 1, 3], ["x", "y"]])
    assert list(back["source"]) == ["model", "manual", "model"]
