"""Tests of _layers: coordinates <-> points layers, score-map overlay, update_or_add."""

import numpy as np
import pandas as pd
import pytest
from napari.layers import Image, Points

from napari_deeppicker._layers import (
    MANUAL_COLOR,
    coordinates_from_points,
    image_layer_metadata,
    points_layer_data,
    score_map_layer_data,
    slices_from_micrographs,
    update_or_add,
)
from napari_deeppicker.core.picking import ScoreMap
from napari.utils.colormaps import ensure_colormap
from napari.utils.colormaps.standardize_color import transform_color

from .conftest import DOT_VALUES, DOTS, dots_image, values_at_points

PICKS = pd.DataFrame({
    "x": [10.0, 70.5, 33.25],
    "y": [5.0, 20.0, 50.75],
    "score": [0.9, np.nan, 0.2],
    "source": ["model", "manual", "model"],
})


def _points(df, **kwargs):
    data, meta, kind = points_layer_data(df, **kwargs)
    assert kind == "points"
    return Points(data, **meta)


def test_points_are_row_col_and_round_trip():
    layer = _points(PICKS, name="mic picks", box=32)
    np.testing.assert_array_equal(layer.data, PICKS[["y", "x"]].to_numpy())
    assert layer.name == "mic picks"
    np.testing.assert_array_equal(layer.size, [32, 32, 32])
    assert layer.symbol[0].value == "disc"
    assert layer.metadata["deeppicker"]["box"] == 32
    pd.testing.assert_frame_equal(coordinates_from_points(layer), PICKS)


def test_border_colour_follows_score_and_manual_points_are_fixed():
    layer = _points(PICKS, name="p", box=20)
    plasma = ensure_colormap("plasma")
    np.testing.assert_allclose(layer.border_color[0], plasma.map([0.9])[0], atol=1e-6)
    np.testing.assert_allclose(layer.border_color[2], plasma.map([0.2])[0], atol=1e-6)
    np.testing.assert_allclose(layer.border_color[1], transform_color(MANUAL_COLOR)[0])
    np.testing.assert_allclose(layer.face_color[:, 3], 0)
    layer.add([30.0, 30.0])  # a point added by hand is manual, without a score
    added = coordinates_from_points(layer).iloc[-1]
    assert added["source"] == "manual" and np.isnan(added["score"])
    np.testing.assert_allclose(layer.border_color[-1], transform_color(MANUAL_COLOR)[0])


def test_defaults_without_score_or_source_columns():
    df = coordinates_from_points(_points(PICKS[["x", "y"]], name="p", box=8, source="manual"))
    assert df["source"].tolist() == ["manual"] * 3
    assert df["score"].isna().all()
    empty = coordinates_from_points(_points(PICKS.iloc[:0], name="p", box=8))
    assert list(empty.columns[:4]) == ["x", "y", "score", "source"] and len(empty) == 0


def test_stack_points_round_trip_with_micrograph_names():
    df = PICKS.assign(micrograph=["a", "c", "c"], slice=[0, 2, 2])
    layer = _points(df, name="stack picks", box=32)
    np.testing.assert_array_equal(layer.data, df[["slice", "y", "x"]].to_numpy(float))
    assert layer.metadata["deeppicker"]["micrographs"] == ["a", "", "c"]
    back = coordinates_from_points(layer)
    pd.testing.assert_frame_equal(back[df.columns], df, check_dtype=False)
    assert back["slice"].dtype == np.int64


def test_slices_from_micrographs_drops_unknown_names():
    df = PICKS.assign(micrograph=["b", "zz", "a"])
    placed = slices_from_micrographs(df, ["a", "b"])
    assert placed["slice"].tolist() == [1, 0]
    assert placed["x"].tolist() == [10.0, 33.25]


def test_non_integer_slices_are_refused():
    with pytest.raises(ValueError, match="slice"):
        points_layer_data(PICKS.assign(slice=[0, 0.5, 1]), name="p", box=8)


def test_points_copy_the_image_transform_and_land_on_the_dots():
    image = Image(dots_image(DOTS, DOT_VALUES), scale=(2.0, 3.0), translate=(7.0, -4.0),
                  metadata={"deeppicker": image_layer_metadata("dots.mrc", 1.5)})
    layer = _points(DOTS, name="dots picks", box=8, image_layer=image)
    np.testing.assert_array_equal(layer.scale, [2.0, 3.0])
    np.testing.assert_array_equal(layer.translate, [7.0, -4.0])
    assert layer.metadata["deeppicker"]["pixel_size"] == 1.5
    np.testing.assert_array_equal(values_at_points(image, layer), DOT_VALUES)


def _position_map(origin, spacing, shape=(5, 7)):
    """A score map whose rows hold the micrograph row of each value, and one for the column."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    rows, cols = origin[0] + i * spacing[0], origin[1] + j * spacing[1]
    return (ScoreMap(rows.astype(np.float32), origin, spacing),
            ScoreMap(cols.astype(np.float32), origin, spacing))


@pytest.mark.parametrize("image_scale, image_translate",
                         [((1.0, 1.0), (0.0, 0.0)), ((2.0, 0.5), (10.0, -3.0))])
def test_score_map_overlays_exactly(image_scale, image_translate):
    image = Image(np.zeros((40, 50), np.float32), scale=image_scale, translate=image_translate)
    row_map, col_map = _position_map((15.5, 7.25), (4.0, 3.5))
    row_data, kwargs, kind = score_map_layer_data(row_map, name="mic scores", image_layer=image)
    assert kind == "image" and kwargs["blending"] == "additive"
    assert kwargs["contrast_limits"] == (0.0, 1.0)
    heat = Image(row_data, **kwargs)
    col_data = score_map_layer_data(col_map, name="c", image_layer=image)[0]
    for i in range(row_data.shape[0]):
        for j in range(row_data.shape[1]):
            on_image = image.world_to_data(heat.data_to_world((i, j)))
            np.testing.assert_allclose(on_image, (row_data[i, j], col_data[i, j]), atol=1e-9)
    np.testing.assert_array_equal(image.scale, image_scale)  # the image itself is left alone
    np.testing.assert_array_equal(image.translate, image_translate)


def test_score_map_stack_uses_the_slice_axis_of_the_image():
    image = Image(np.zeros((3, 40, 50), np.float32), scale=(5.0, 2.0, 2.0),
                  translate=(1.0, 3.0, 4.0))
    row_map, col_map = _position_map((20.0, 10.0), (8.0, 6.0), shape=(3, 4))
    maps = [ScoreMap(row_map.data + k, row_map.origin, row_map.spacing) for k in range(3)]
    data, kwargs, _ = score_map_layer_data(maps, name="s", image_layer=image)
    heat = Image(data, **kwargs)
    assert data.shape == (3, 3, 4)
    for k, i, j in [(0, 0, 0), (2, 1, 3), (1, 2, 2)]:
        on_image = image.world_to_data(heat.data_to_world((k, i, j)))
        np.testing.assert_allclose(on_image, (k, data[k, i, j] - k, col_map.data[i, j]), atol=1e-9)
    with pytest.raises(ValueError, match="same shape, origin and spacing"):
        shifted = ScoreMap(row_map.data, (0.0, 0.0), row_map.spacing)
        score_map_layer_data([row_map, shifted], name="s")


def test_update_or_add_replaces_instead_of_duplicating(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((60, 80), np.float32), name="mic")
    first = update_or_add(viewer, points_layer_data(PICKS, name="mic picks", box=32))
    viewer.add_image(np.zeros((60, 80), np.float32), name="other")
    newer = PICKS.iloc[:2].assign(score=[0.5, 0.6], source="model")
    second = update_or_add(viewer, points_layer_data(newer, name="mic picks", box=40))
    assert second is first
    assert [layer.name for layer in viewer.layers] == ["mic", "mic picks", "other"]
    pd.testing.assert_frame_equal(coordinates_from_points(second), newer)
    np.testing.assert_array_equal(second.size, [40, 40])
    assert second.metadata["deeppicker"]["box"] == 40
    plasma = ensure_colormap("plasma")
    np.testing.assert_allclose(second.border_color, plasma.map([0.5, 0.6]), atol=1e-6)
    second.add([1.0, 1.0])  # the defaults survive the update
    assert coordinates_from_points(second)["source"].iloc[-1] == "manual"


def test_update_or_add_replaces_a_layer_of_another_kind_in_place(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((60, 80), np.float32), name="mic")
    viewer.add_image(np.zeros((4, 4), np.float32), name="mic picks")
    viewer.add_image(np.zeros((4, 4), np.float32), name="last")
    layer = update_or_add(viewer, points_layer_data(PICKS, name="mic picks", box=32))
    assert isinstance(layer, Points)
    assert [lay.name for lay in viewer.layers] == ["mic", "mic picks", "last"]
    stacked = PICKS.assign(slice=[0, 1, 1])
    stack = update_or_add(viewer, points_layer_data(stacked, name="mic picks", box=32))
    assert stack.ndim == 3 and len(viewer.layers) == 3
    first_map, second_map = (_position_map(o, (2.0, 2.0))[0] for o in ((0.0, 0.0), (1.0, 1.0)))
    heat = update_or_add(viewer, score_map_layer_data(first_map, name="mic scores"))
    again = update_or_add(viewer, score_map_layer_data(second_map, name="mic scores"))
    assert again is heat and len(viewer.layers) == 4
    np.testing.assert_array_equal(again.translate, [1.0, 1.0])
