"""The Evaluate dock: numbers, match colours, missed particles, curve, file reference, stacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_deeppicker import _layers
from napari_deeppicker._widgets import _base
from napari_deeppicker._widgets.evaluate import EvaluateWidget
from tests.napari._widget_data import BOX, micrograph

TIMEOUT = 60_000


@pytest.fixture
def errors(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(_base, "show_error", seen.append)
    return seen


def picks_and_truth(seed: int = 1, n_true: int = 12):
    """The first ``n_true`` true particles shifted by 3 px, plus 3 false picks; scores decrease."""
    truth = micrograph(seed)[1]
    picks = truth.iloc[:n_true][["x", "y"]] + 3.0
    false = pd.DataFrame({"x": [30.0, 480.0, 250.0], "y": [30.0, 30.0, 480.0]})
    picks = pd.concat([picks, false], ignore_index=True)
    picks["score"] = np.linspace(0.95, 0.3, len(picks))
    picks.loc[n_true:, "score"] = [0.6, 0.4, 0.35]
    return picks, truth


@pytest.fixture
def evaluate(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(micrograph(1)[0], name="mic")
    picks, truth = picks_and_truth()
    image = viewer.layers["mic"]
    _layers.update_or_add(viewer, _layers.points_layer_data(picks, name="mic picks", box=BOX,
                                                            image_layer=image))
    _layers.update_or_add(viewer, _layers.points_layer_data(truth, name="mic reference", box=BOX,
                                                            image_layer=image, source="reference"))
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.picks.value = viewer.layers["mic picks"]
    widget.reference.value = viewer.layers["mic reference"]
    return viewer, widget, picks, truth


def run(qtbot, widget):
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def test_evaluate_against_reference_layer(qtbot, evaluate):
    viewer, widget, picks, truth = evaluate
    assert widget.box.value == BOX  # read from the picks layer
    run(qtbot, widget)
    o = widget.report.overall
    assert (o["tp"], o["fp"], o["fn"]) == (12, 3, len(truth) - 12)
    assert o["precision"] == pytest.approx(12 / 15)
    assert o["recall"] == pytest.approx(12 / len(truth))
    assert o["centre_error"] == pytest.approx(np.hypot(3, 3) / BOX)
    layer = viewer.layers["mic picks"]
    assert list(layer.features["match"]) == ["TP"] * 12 + ["FP"] * 3
    np.testing.assert_allclose(layer.border_color[0], [0, 1, 0, 1])  # lime
    np.testing.assert_allclose(layer.border_color[-1], [1, 0, 0, 1])  # red
    missed = viewer.layers["mic missed"]
    np.testing.assert_allclose(missed.data, truth.iloc[12:][["y", "x"]].to_numpy())
    assert f"{12 / 15:.3f}" in widget.results.value and "12 / 3 / " in widget.results.value
    precision, recall = widget.plot.axes.get_lines()[:2]
    assert len(precision.get_xdata()) == 15
    assert recall.get_ydata()[-1] == pytest.approx(12 / len(truth))


def test_hidden_picks_are_not_evaluated(qtbot, evaluate):
    viewer, widget, picks, truth = evaluate
    layer = viewer.layers["mic picks"]
    layer.shown = picks["score"].to_numpy() >= 0.5
    run(qtbot, widget)
    match = layer.features["match"].to_numpy()
    assert set(match[~layer.shown]) == {"hidden"}
    assert widget.report.overall["n_picks"] == int(layer.shown.sum())
    assert widget.report.overall["fp"] == 1  # only the 0.6 false pick is shown


def test_reference_from_file(qtbot, evaluate, tmp_path):
    from napari_deeppicker.core.io import write_coordinates

    viewer, widget, picks, truth = evaluate
    path = tmp_path / "mic.star"
    write_coordinates(truth, path)
    widget.reference.value = None
    widget.reference_file.value = path
    run(qtbot, widget)
    assert widget.report.overall["tp"] == 12 and widget.report.overall["n_reference"] == len(truth)


def test_stack_is_evaluated_per_slice(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([micrograph(1)[0], micrograph(2)[0]]), name="st")
    p1, t1 = picks_and_truth(1)
    p2, t2 = picks_and_truth(2, n_true=5)
    picks = pd.concat([p1.assign(slice=0), p2.assign(slice=1)], ignore_index=True)
    truth = pd.concat([t1.assign(slice=0), t2.assign(slice=1)], ignore_index=True)
    image = viewer.layers["st"]
    for df, name in ((picks, "st picks"), (truth, "st reference")):
        data = _layers.points_layer_data(df, name=name, box=BOX, image_layer=image)
        _layers.update_or_add(viewer, data)
    widget = EvaluateWidget(viewer)
    widget.picks.value = viewer.layers["st picks"]
    widget.reference.value = viewer.layers["st reference"]
    run(qtbot, widget)
    assert list(widget.report.per_micrograph["tp"]) == [12, 5]
    missed = viewer.layers["st missed"]
    assert missed.ndim == 3 and len(missed.data) == len(truth) - 17
    assert set(missed.data[:, 0]) == {0, 1}


def test_missing_reference_is_reported(qtbot, evaluate, errors):
    viewer, widget, picks, truth = evaluate
    widget.reference.value = None
    widget.run_button.native.click()
    assert "reference" in errors[-1] and widget.run_button.enabled


def test_picking_again_after_evaluation_colours_by_score(qtbot, evaluate):
    from napari_deeppicker._widgets._base import MODELS
    from napari_deeppicker._widgets.pick import PickWidget
    from tests.napari._widget_data import tiny_model

    viewer, widget, picks, truth = evaluate
    run(qtbot, widget)
    layer = viewer.layers["mic picks"]
    assert layer.border_color_mode == "cycle"
    MODELS.add("tiny", tiny_model())
    pick = PickWidget(viewer)
    pick.model.value, pick.box.value = "tiny", BOX
    run(qtbot, pick)
    assert viewer.layers["mic picks"] is layer and layer.border_color_mode == "colormap"
    assert set(layer.features["source"]) == {"model"}
