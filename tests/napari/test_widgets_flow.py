"""The whole session: open -> pick -> edit -> retrain -> evaluate -> export -> read back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from napari_deeppicker._widgets._base import MODELS
from napari_deeppicker._widgets.evaluate import EvaluateWidget
from napari_deeppicker._widgets.pick import PickWidget
from napari_deeppicker.core import io
from tests.napari._widget_data import BOX, micrograph, tiny_model

TIMEOUT = 120_000


def click(qtbot, widget, button):
    button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


@pytest.mark.slow
def test_open_pick_edit_retrain_evaluate_export(qtbot, make_napari_viewer, tmp_path):
    image, truth = micrograph(1)
    io.write_micrograph(tmp_path / "mic.mrc", image, pixel_size=2.0)
    io.write_coordinates(truth, tmp_path / "mic_truth.star")
    viewer = make_napari_viewer()
    viewer.open(tmp_path / "mic.mrc", plugin="napari-deeppicker")
    np.testing.assert_array_equal(viewer.layers["mic"].data, image)
    MODELS.add("tiny", tiny_model())
    pick = PickWidget(viewer)
    viewer.window.add_dock_widget(pick)
    pick.model.value, pick.box.value, pick.threshold.value = "tiny", BOX, 0.3
    click(qtbot, pick, pick.run_button)
    picks = viewer.layers["mic picks"]
    n_model = len(picks.data)
    assert n_model > 0

    removed = picks.data[0].copy()
    picks.remove([0])
    added = truth[["y", "x"]].to_numpy()[-1]
    picks.add(added[None])
    pick.epochs.value = 1
    click(qtbot, pick, pick.retrain_button)
    assert "retrained" in pick.status.value and pick.last_retrain_seconds > 0
    source = picks.features["source"].to_numpy()
    np.testing.assert_allclose(picks.data[source == "manual"], [added])
    assert np.min(np.linalg.norm(picks.data - removed, axis=1)) > 0.2 * BOX

    viewer.open(tmp_path / "mic_truth.star", plugin="napari-deeppicker")
    reference = viewer.layers[-1]
    evaluate = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(evaluate)
    evaluate.picks.value, evaluate.reference.value = picks, reference
    click(qtbot, evaluate, evaluate.run_button)
    report = evaluate.report
    assert report.overall["n_picks"] == int(picks.shown.sum())
    assert report.overall["n_reference"] == len(truth)
    match = picks.features["match"].to_numpy()
    assert match[source == "manual"][0] == "TP"  # the added point sits on a true particle
    assert (match == "TP").sum() == report.overall["tp"]
    assert len(viewer.layers["mic missed"].data) == report.overall["fn"]

    out = tmp_path / "mic_picks.star"
    picks.save(str(out), plugin="napari-deeppicker")
    back = io.read_coordinates(out)
    shown = np.asarray(picks.shown, bool)  # what the threshold slider shows is what is written
    assert len(back) == shown.sum()
    expected = pd.DataFrame({"x": picks.data[shown, 1], "y": picks.data[shown, 0],
                             "score": picks.features["score"].to_numpy(float)[shown]})
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), expected[["x", "y"]].to_numpy(),
                               atol=1e-3)
    np.testing.assert_allclose(back["score"].to_numpy(float), expected["score"].to_numpy(),
                               atol=1e-4, equal_nan=True)
    assert list(back["source"]) == list(source[shown])
    viewer.open(out, plugin="napari-deeppicker")
    np.testing.assert_allclose(viewer.layers[-1].data, picks.data, atol=1e-3)
