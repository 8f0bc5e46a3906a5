"""The Pick dock: picking, live threshold, edits that survive re-picking, stacks, stop, errors."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QTimer

from napari_deeppicker._widgets import _base
from napari_deeppicker._widgets._base import MODELS
from napari_deeppicker._widgets._parameters import FROM_FILE, GENERAL_MISSING, model_choices
from napari_deeppicker._widgets._preview import PREVIEW
from napari_deeppicker._widgets.pick import PickWidget
from tests.napari._widget_data import BOX, micrograph, stack, tiny_model

TIMEOUT = 60_000


@pytest.fixture
def errors(monkeypatch):
    """Messages passed to show_error by the docks."""
    seen: list[str] = []
    monkeypatch.setattr(_base, "show_error", seen.append)
    return seen


@pytest.fixture
def pick(make_napari_viewer):
    """A viewer with a synthetic micrograph "mic" and a docked Pick widget using the tiny model."""
    viewer = make_napari_viewer()
    viewer.add_image(micrograph(1)[0], name="mic")
    MODELS.add("tiny", tiny_model())
    widget = PickWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.value = "tiny"
    widget.box.value = BOX
    return viewer, widget


def run(qtbot, widget, button=None):
    (button or widget.run_button).native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def test_pick_makes_points_and_score_layers(qtbot, pick):
    viewer, widget = pick
    run(qtbot, widget)
    layer = viewer.layers["mic picks"]
    assert len(layer.data) > 0 and layer.data.shape[1] == 2
    assert set(layer.features["source"]) == {"model"}
    assert np.all(layer.features["score"] >= 0.1)
    np.testing.assert_allclose(layer.size, BOX)
    scores = viewer.layers["mic scores"]
    meta = scores.metadata["deeppicker"]
    np.testing.assert_allclose(scores.scale, meta["spacing"])
    np.testing.assert_allclose(scores.translate, meta["origin"])
    assert scores.blending == "additive"
    assert viewer.layers.index(scores) < viewer.layers.index(layer)  # heatmap under the picks
    assert PREVIEW not in viewer.layers
    assert widget.run_button.enabled and not widget.stop_button.enabled
    assert widget.device_label.value == "uses cpu"


def test_threshold_slider_changes_shown_only(qtbot, pick):
    viewer, widget = pick
    widget.threshold.value = 0.3
    run(qtbot, widget)
    layer = viewer.layers["mic picks"]
    n = len(layer.data)
    scores = layer.features["score"].to_numpy()
    for t in (0.9, 0.2, 0.5):
        widget.threshold.value = t
        assert len(layer.data) == n
        np.testing.assert_array_equal(layer.shown, scores >= t)
        np.testing.assert_array_equal(layer.border_width > 0, scores >= t)
        assert widget.status.value == f"{int(np.sum(scores >= t))} picks shown (threshold {t:.2f})"


def test_repick_keeps_manual_points_and_deletions(qtbot, pick):
    viewer, widget = pick
    widget.threshold.value = 0.1
    run(qtbot, widget)
    layer = viewer.layers["mic picks"]
    n_layers = len(viewer.layers)
    deleted = layer.data[0].copy()
    layer.remove([0])
    layer.add(np.array([[100.0, 120.0]]))
    assert layer.features["source"].iloc[-1] == "manual"
    run(qtbot, widget)
    assert len(viewer.layers) == n_layers and viewer.layers["mic picks"] is layer
    manual = layer.data[layer.features["source"].to_numpy() == "manual"]
    np.testing.assert_allclose(manual, [[100.0, 120.0]])
    assert np.min(np.linalg.norm(layer.data - deleted, axis=1)) > 0.2 * BOX
    assert np.all(layer.shown[layer.features["source"].to_numpy() == "manual"])


def test_dragged_point_becomes_manual(qtbot, pick):
    viewer, widget = pick
    run(qtbot, widget)
    layer = viewer.layers["mic picks"]
    layer.selected_data = {1}
    layer._move({1}, layer.data[1] + 5)  # what a mouse drag calls
    assert layer.features["source"].iloc[1] == "manual"
    assert set(layer.features["source"].iloc[2:]) == {"model"}


def test_retrain_from_edits(qtbot, pick):
    viewer, widget = pick
    widget.threshold.value = 0.1
    run(qtbot, widget)
    layer = viewer.layers["mic picks"]
    truth = micrograph(1)[1]
    layer.remove([len(layer.data) - 1])
    layer.add(np.array([[truth["y"].iloc[0], truth["x"].iloc[0]]]))
    widget.epochs.value = 1
    run(qtbot, widget, widget.retrain_button)
    assert "mic retrained" in MODELS and widget.model.value == "mic retrained"
    manual = layer.data[layer.features["source"].to_numpy() == "manual"]
    np.testing.assert_allclose(manual, [[truth["y"].iloc[0], truth["x"].iloc[0]]])
    assert 0 < widget.last_retrain_seconds < 60
    layer.remove([0])  # no stale selection left from the points added before the update
    assert "retrained and re-picked" in widget.status.value


def test_retrain_arguments_from_edits(qtbot, pick):
    viewer, widget = pick
    widget.threshold.value = 0.1
    run(qtbot, widget)
    layer = viewer.layers["mic picks"]
    gone = layer.data[2].copy()
    layer.remove([2])
    layer.add(np.array([[200.0, 210.0]]))
    widget.threshold.value = 0.3
    from napari_deeppicker._widgets._edits import RetrainParameters

    params = RetrainParameters(viewer.layers["mic"], layer, widget._trackers["mic"], widget._model,
                               2, 0.3, "cpu")
    assert params.validation_error() is None
    args = params.as_core_arguments()
    negatives, positives, avoid = args["negatives"][0], args["positives"][0], args["avoid"][0]
    np.testing.assert_allclose(negatives[["y", "x"]].to_numpy(), [gone])
    assert len(positives) == int(np.count_nonzero(layer.shown))
    assert ((positives["y"] == 200.0) & (positives["x"] == 210.0)).sum() == 1
    assert len(avoid) == len(layer.data) - len(positives)
    assert args["train_config"].epochs == 2 and args["box"] == BOX


def test_stack_current_slice_then_all(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(stack((1, 2, 3)), name="st")
    MODELS.add("tiny", tiny_model())
    widget = PickWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.value, widget.box.value = "tiny", BOX
    assert not widget.batch.native.isHidden()
    viewer.dims.set_current_step(0, 1)
    run(qtbot, widget)
    layer = viewer.layers["st picks"]
    assert layer.ndim == 3 and set(layer.data[:, 0]) == {1}
    assert viewer.layers["st scores"].data.shape[0] == 3
    assert np.all(viewer.layers["st scores"].data[0] == 0)
    layer.add(np.array([[1.0, 50.0, 60.0]]))
    widget.batch.value = "all slices"
    run(qtbot, widget)
    assert set(layer.data[:, 0]) == {0, 1, 2}
    assert np.any(np.all(layer.data == [1.0, 50.0, 60.0], axis=1))
    assert np.all(viewer.layers["st scores"].data.max(axis=(1, 2)) > 0)


def test_stop_keeps_the_micrographs_done(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(stack(tuple(range(1, 9))), name="st")
    MODELS.add("tiny", tiny_model())
    widget = PickWidget(viewer)
    widget.model.value, widget.box.value, widget.batch.value = "tiny", BOX, "all slices"
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(10)
    widget.run_button.native.click()
    assert not widget.run_button.enabled and widget.stop_button.enabled
    qtbot.waitUntil(lambda: len(widget._job.steps) >= 1, timeout=TIMEOUT)
    widget.stop_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    timer.stop()
    done = sorted(set(viewer.layers["st picks"].data[:, 0].astype(int)))
    assert 1 <= len(widget._job.steps) < 8 and len(done) <= len(widget._job.steps)
    assert widget.status.value.startswith("stopped")
    assert widget.run_button.enabled and not widget.stop_button.enabled
    assert len(ticks) >= 5  # the event loop kept turning while the worker ran


def test_box_preview_follows_box_and_goes_away(qtbot, pick):
    viewer, widget = pick
    widget.box.value = 80
    preview = viewer.layers[PREVIEW]
    np.testing.assert_allclose(preview.size, 80)
    np.testing.assert_allclose(preview.data[0], np.asarray(viewer.scene.camera.center[-2:]))
    widget.box.value = 60
    np.testing.assert_allclose(viewer.layers[PREVIEW].size, 60)
    viewer.window.remove_dock_widget(widget.native)
    assert PREVIEW not in viewer.layers


def test_box_larger_than_image_is_reported(qtbot, pick, errors):
    viewer, widget = pick
    widget.box.value = 600
    widget.run_button.native.click()
    assert errors and "larger than the image" in errors[0]
    assert widget.run_button.enabled and not widget.running and "mic picks" not in viewer.layers


def test_bad_model_file_is_reported(qtbot, pick, errors, tmp_path):
    viewer, widget = pick
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    widget.model_file.value = bad
    assert widget.model.value == FROM_FILE
    run(qtbot, widget)
    assert len(errors) == 1 and "bad.safetensors" in errors[0]
    assert widget.run_button.enabled and "mic picks" not in viewer.layers


def test_model_from_file_and_missing_general(qtbot, pick, errors, tmp_path):
    from napari_deeppicker.core.model import save_model

    viewer, widget = pick
    if GENERAL_MISSING in model_choices():
        widget.model.value = GENERAL_MISSING
        widget.run_button.native.click()
        assert "not installed" in errors[-1]
    path = save_model(tiny_model(), tmp_path / "tiny.safetensors")
    widget.model_file.value = path
    run(qtbot, widget)
    assert len(viewer.layers["mic picks"].data) > 0
    assert str(path) in viewer.layers["mic picks"].metadata["deeppicker"]["model"]


def test_nothreads_runs_synchronously(qtbot, pick, monkeypatch):
    viewer, widget = pick
    monkeypatch.setenv("DEEPPICKER_NOTHREADS", "1")
    widget.run_button.native.click()
    assert "mic picks" in viewer.layers and not widget.running


def test_closing_the_dock_stops_the_worker(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(stack(tuple(range(1, 7))), name="st")
    MODELS.add("tiny", tiny_model())
    widget = PickWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.value, widget.box.value, widget.batch.value = "tiny", BOX, "all slices"
    widget.run_button.native.click()
    worker = widget._worker
    qtbot.waitUntil(lambda: worker.is_running, timeout=TIMEOUT)
    viewer.window.remove_dock_widget(widget.native)
    assert worker.abort_requested
    qtbot.waitUntil(lambda: not worker.is_running, timeout=TIMEOUT)
    qtbot.wait(50)
    assert "st picks" not in viewer.layers  # results of a closed dock are dropped


def test_particle_free_micrograph_gets_no_picks_and_a_message(qtbot, make_napari_viewer,
                                                              monkeypatch):
    """The noise-null guard in the dock: on by default, with a notification; the box turns it off."""
    from napari_deeppicker._widgets import pick as pick_module
    from napari_deeppicker.core.synthetic import simulate_micrograph

    messages: list[str] = []
    monkeypatch.setattr(pick_module, "show_info", messages.append)
    viewer = make_napari_viewer()
    noise, _ = simulate_micrograph(384, box=48, noise_only=True, seed=4323, defocus_um=2.0)
    viewer.add_image(noise, name="noise")
    widget = PickWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model.value, widget.box.value, widget.threshold.value = "general", 48, 0.5
    assert widget.null_check.value is True
    run(qtbot, widget)
    assert len(viewer.layers["noise picks"].data) == 0
    assert "particle-free" in messages[-1]
    widget.null_check.value = False
    run(qtbot, widget)
    assert int(np.sum(viewer.layers["noise picks"].shown)) > 0
    assert "particle-free" not in messages[-1]
