"""One full-window screenshot per dock, in use on a synthetic micrograph.

The README's screenshots (real micrograph, shipped model) are made by scripts/screenshots.py;
these tests check that every dock renders in a full window and write to a temporary folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_deeppicker import _layers
from napari_deeppicker._widgets._base import MODELS
from napari_deeppicker._widgets.evaluate import EvaluateWidget
from napari_deeppicker._widgets.pick import PickWidget
from napari_deeppicker._widgets.train import TrainWidget
from tests.napari._widget_data import BOX, micrograph, tiny_model

pytestmark = pytest.mark.slow

TIMEOUT = 120_000


@pytest.fixture
def shown_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.add_image(micrograph(1)[0], name="synthetic")
    qtbot.wait(50)
    return viewer


def run(qtbot, widget, button=None):
    (button or widget.run_button).native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def save(viewer, qtbot, folder: Path, name: str) -> np.ndarray:
    viewer.reset_view()
    qtbot.wait(100)
    shot = viewer.screenshot(path=str(folder / name), canvas_only=False)
    assert (folder / name).stat().st_size > 10_000
    assert shot.shape[0] >= 900 and shot.shape[1] >= 1500
    return shot


def test_screenshot_pick(qtbot, shown_viewer, tmp_path):
    viewer = shown_viewer
    MODELS.add("tiny", tiny_model())
    widget = PickWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Pick particles")
    widget.model.value, widget.box.value, widget.threshold.value = "tiny", BOX, 0.5
    run(qtbot, widget)
    viewer.layers["synthetic scores"].visible = True
    save(viewer, qtbot, tmp_path, "pick_widget.png")


def test_screenshot_train(qtbot, shown_viewer, tmp_path):
    viewer = shown_viewer
    truth = micrograph(1)[1]
    viewer.add_points(truth[["y", "x"]].to_numpy(), name="synthetic truth", size=BOX,
                      face_color="transparent", border_color="cyan")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train a picker")
    widget.box.value = BOX
    widget.image.value = viewer.layers["synthetic"]
    widget.points.value = viewer.layers["synthetic truth"]
    widget.add_pair_button.native.click()
    widget.epochs.value, widget.model_name.value = 4, "synthetic model"
    run(qtbot, widget)
    assert len(widget.plot.axes.get_lines()[0].get_xdata()) >= 2
    save(viewer, qtbot, tmp_path, "train_widget.png")


def test_screenshot_evaluate(qtbot, shown_viewer, tmp_path):
    viewer = shown_viewer
    image, truth = viewer.layers["synthetic"], micrograph(1)[1]
    picks = truth.iloc[3:][["x", "y"]] + 2.0
    picks = pd.concat([picks, pd.DataFrame({"x": [60.0], "y": [300.0]})], ignore_index=True)
    picks["score"] = np.linspace(0.95, 0.4, len(picks))
    _layers.update_or_add(viewer, _layers.points_layer_data(
        truth, name="synthetic reference", box=BOX, image_layer=image, source="reference"))
    _layers.update_or_add(viewer, _layers.points_layer_data(
        picks, name="synthetic picks", box=BOX, image_layer=image))
    viewer.layers["synthetic reference"].visible = False
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Evaluate picks")
    widget.picks.value, widget.reference.value = (viewer.layers["synthetic picks"],
                                                  viewer.layers["synthetic reference"])
    run(qtbot, widget)
    assert widget.report.overall["fn"] == 3
    save(viewer, qtbot, tmp_path, "evaluate_widget.png")
