"""The Train dock: training sets from layers and folders, modes, live curve, stop, save."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_deeppicker._widgets import _base
from napari_deeppicker._widgets._base import MODELS
from napari_deeppicker._widgets._parameters import MODES
from napari_deeppicker._widgets.pick import PickWidget
from napari_deeppicker._widgets.train import TrainWidget
from tests.napari._widget_data import BOX, micrograph

TIMEOUT = 120_000


@pytest.fixture
def errors(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(_base, "show_error", seen.append)
    return seen


def add_pair(viewer, seed: int, name: str):
    image, truth = micrograph(seed)
    viewer.add_image(image, name=name)
    viewer.add_points(truth[["y", "x"]].to_numpy(), name=f"{name} truth", size=BOX)
    return truth


@pytest.fixture
def train(make_napari_viewer):
    viewer = make_napari_viewer()
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.box.value = BOX
    return viewer, widget


def choose_pair(widget, viewer, name):
    widget.image.value = viewer.layers[name]
    widget.points.value = viewer.layers[f"{name} truth"]
    widget.add_pair_button.native.click()


def run(qtbot, widget):
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)


def test_train_from_layer_pair_updates_curve_and_registry(qtbot, train):
    viewer, widget = train
    add_pair(viewer, 21, "a")
    choose_pair(widget, viewer, "a")
    assert widget.sets.choices == ("a + a truth (box 48)",)
    widget.epochs.value, widget.model_name.value = 2, "from a"
    run(qtbot, widget)
    model = MODELS.get("from a")
    assert model is widget.model
    summary = model.metadata["training"]
    assert summary["epochs_run"] == 2 and summary["sets"][0]["particles_available"] > 10
    lines = widget.plot.axes.get_lines()
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2])
    np.testing.assert_allclose(lines[1].get_ydata(), [h["val_loss"] for h in summary["history"]])
    assert widget.progress.value == 1000 and "from a" in widget.status.value
    pick = PickWidget(viewer)
    assert "from a" in pick.model.choices


def test_modes_group_sets_by_molecule(qtbot, train):
    viewer, widget = train
    for seed, name in ((21, "a"), (22, "b")):
        add_pair(viewer, seed, name)
        choose_pair(widget, viewer, name)
    widget.epochs.value = 1
    widget.model_name.value = "automated"
    run(qtbot, widget)
    sets = MODELS.get("automated").metadata["training"]["sets"]
    assert [s["micrographs"] for s in sets] == [1, 1]
    widget.mode.value = MODES[1]
    widget.model_name.value = "semi"
    run(qtbot, widget)
    assert [s["micrographs"] for s in MODELS.get("semi").metadata["training"]["sets"]] == [2]


def test_train_from_folders(qtbot, train, tmp_path):
    from napari_deeppicker.core.synthetic import simulate_dataset

    viewer, widget = train
    simulate_dataset(tmp_path, n=2, size=512, box=BOX, seed=3)
    widget.micrographs_dir.value = tmp_path / "micrographs"
    widget.coordinates_dir.value = tmp_path / "coords"
    widget.add_folders_button.native.click()
    assert widget.sets.choices == ("micrographs + coords (box 48)",)
    widget.epochs.value, widget.model_name.value = 1, "folders"
    run(qtbot, widget)
    assert MODELS.get("folders").metadata["training"]["sets"][0]["micrographs"] == 2


def test_stop_keeps_best_model_so_far(qtbot, train):
    viewer, widget = train
    add_pair(viewer, 21, "a")
    choose_pair(widget, viewer, "a")
    widget.epochs.value, widget.model_name.value = 200, "stopped"
    widget.run_button.native.click()
    assert widget.stop_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget._trainer is not None and len(widget._trainer.history) >= 1,
                    timeout=TIMEOUT)
    widget.stop_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    summary = MODELS.get("stopped").metadata["training"]
    assert 1 <= summary["epochs_run"] < 200
    assert widget.run_button.enabled and "best model so far" in widget.status.value


def test_save_model_writes_a_loadable_file(qtbot, train, tmp_path, errors):
    from napari_deeppicker.core.model import load_model

    viewer, widget = train
    widget.save_button.native.click()
    assert errors[-1] == "Train a model first."
    add_pair(viewer, 21, "a")
    choose_pair(widget, viewer, "a")
    widget.epochs.value = 1
    run(qtbot, widget)
    widget.save_path.value = tmp_path / "picker"
    widget.save_button.native.click()
    loaded = load_model(tmp_path / "picker.safetensors")
    for key, value in widget.model.net.state_dict().items():
        torch.testing.assert_close(loaded.net.state_dict()[key], value.cpu())


def test_errors_are_notified_and_ui_reenabled(qtbot, train, errors):
    viewer, widget = train
    widget.run_button.native.click()
    assert "Add at least one training set" in errors[-1]
    viewer.add_image(micrograph(21)[0], name="a")
    viewer.add_points(np.empty((0, 2)), name="a truth")
    choose_pair(widget, viewer, "a")
    widget.run_button.native.click()
    assert "no points to train on" in errors[-1]
    viewer.layers["a truth"].add(np.array([[2.0, 2.0]]))  # on the border: no usable particle
    run(qtbot, widget)
    assert "nothing to train on" in errors[-1]
    assert widget.run_button.enabled and not widget.stop_button.enabled


def test_train_from_a_stack_uses_each_slice(qtbot, train):
    viewer, widget = train
    (image1, truth1), (image2, truth2) = micrograph(21), micrograph(22)
    viewer.add_image(np.stack([image1, image2, image1]), name="st")
    points = np.concatenate([np.column_stack([np.full(len(t), k), t[["y", "x"]].to_numpy()])
                             for k, t in ((0, truth1), (1, truth2))])
    viewer.add_points(points, name="st truth", size=BOX)
    choose_pair(widget, viewer, "st")
    widget.epochs.value, widget.model_name.value = 1, "stack"
    run(qtbot, widget)
    summary = MODELS.get("stack").metadata["training"]["sets"][0]
    assert summary["micrographs"] == 2  # slices 0 and 1 hold points; slice 2 has none
    assert summary["particles_available"] == len(truth1) + len(truth2)
