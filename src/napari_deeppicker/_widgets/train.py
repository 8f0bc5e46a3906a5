"""The Train dock: train a model from (image, points) layer pairs or from folders, watch the loss.

Each entry of the list is one training set. The trained model joins the session's models (the
Pick dock lists it) and can be saved as a ``.safetensors`` file. Stop keeps the best model so far.
"""

from __future__ import annotations

import logging
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    LineEdit,
    PushButton,
    RadioButtons,
    Select,
    SpinBox,
    create_widget,
)
from napari.utils.notifications import show_info

from napari_deeppicker import _layers
from napari_deeppicker._widgets import _jobs
from napari_deeppicker._widgets._base import (
    DEVICES,
    MODELS,
    DockWidget,
    device_text,
    row,
    text_label,
)
from napari_deeppicker._widgets._edits import image_data
from napari_deeppicker._widgets._parameters import MODES, NEW_NETWORK, TrainParameters, init_choices
from napari_deeppicker._widgets._plot import PlotCanvas
from napari_deeppicker.core.training import Trainer

log = logging.getLogger(__name__)


def layer_set(name: str, image, points, box: int) -> _jobs.SetSpec:
    """A training set from an image layer and a points layer (shown points; stacks by slice)."""
    coords = _layers.coordinates_from_points(points)[np.asarray(points.shown, bool)]
    data = image_data(image)
    if np.ndim(data) == 2 and points.ndim == 2:
        return _jobs.SetSpec(name, box, [data], [coords[["x", "y"]]])
    if np.ndim(data) == 3 and points.ndim == 3:
        slices = sorted(set(coords["slice"]))
        return _jobs.SetSpec(name, box, [data[k] for k in slices],
                             [coords[coords["slice"] == k][["x", "y"]] for k in slices])
    raise ValueError(f"{points.name} ({points.ndim}D) does not fit {image.name} ({np.ndim(data)}D)")


class TrainWidget(DockWidget):
    """Train a DeepPicker model on particles of other molecules or of the target.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, run_text="Train")
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.points = create_widget(annotation=napari.layers.Points, label="points")
        self.add_pair_button = PushButton(text="Add image + points")
        self.micrographs_dir = FileEdit(mode="d", label="micrographs")
        self.coordinates_dir = FileEdit(mode="d", label="coordinates")
        self.add_folders_button = PushButton(text="Add folders")
        self.box = SpinBox(value=64, min=8, max=4096, step=2, label="box (px)")
        self.sets = Select(choices=[], label="training sets")
        self.sets.native.setMaximumHeight(90)
        self.remove_button = PushButton(text="Remove selected")
        self.mode = RadioButtons(choices=MODES, value=MODES[0], label="mode")
        self.init = ComboBox(choices=init_choices, value=NEW_NETWORK, label="start from")
        self.epochs = SpinBox(value=10, min=1, max=500, label="epochs")
        self.device = ComboBox(choices=DEVICES, value="auto", label="device")
        self.device_label = text_label(device_text("auto"))
        self.model_name = LineEdit(value="my model", label="model name")
        self.plot = PlotCanvas(viewer, height=200)
        self.save_path = FileEdit(mode="w", filter="*.safetensors", label="save to")
        self.save_button = PushButton(text="Save model")
        self.extend([self.image, self.points, self.micrographs_dir, self.coordinates_dir, self.box,
                     row(self.add_pair_button, self.add_folders_button), self.sets,
                     self.remove_button, self.mode, self.init, self.epochs,
                     row(self.device, self.device_label, label="device"), self.model_name,
                     *self._controls(), self.plot, self.save_path, self.save_button])
        self._busy_widgets += [self.add_pair_button, self.add_folders_button, self.remove_button,
                               self.save_button]
        self._entries: dict[str, tuple] = {}
        self._trainer: Trainer | None = None
        self.model = None
        self.add_pair_button.changed.connect(self._on_add_pair_clicked)
        self.add_folders_button.changed.connect(self._on_add_folders_clicked)
        self.remove_button.changed.connect(self._on_remove_clicked)
        self.device.changed.connect(self._on_device_changed)
        self.save_button.changed.connect(self._on_save_clicked)
        self._connect(MODELS.changed, self.init.reset_choices)
        self._draw_history([])

    # -- the list of training sets --------------------------------------------------------------
    def _add_entry(self, label: str, entry: tuple) -> None:
        self._entries[label] = entry
        self.sets.choices = list(self._entries)

    def _on_add_pair_clicked(self) -> None:
        image, points = self.image.value, self.points.value
        if image is None or points is None:
            self._fail("Choose an image layer and a points layer to add.")
            return
        self._add_entry(f"{image.name} + {points.name} (box {self.box.value})",
                        ("layers", image, points, self.box.value))

    def _on_add_folders_clicked(self) -> None:
        mics, coords = self.micrographs_dir.value, self.coordinates_dir.value
        if not (mics and Path(mics).is_dir() and coords and Path(coords).exists()):
            self._fail("Choose a micrographs folder and a coordinates folder (or file) to add.")
            return
        label = f"{Path(mics).name} + {Path(coords).name} (box {self.box.value})"
        self._add_entry(label, ("folders", Path(mics), Path(coords), self.box.value))

    def _on_remove_clicked(self) -> None:
        for label in self.sets.value:
            self._entries.pop(label, None)
        self.sets.choices = list(self._entries)

    def _on_device_changed(self, name: str) -> None:
        self.device_label.value = device_text(name)

    def _specs(self) -> list[_jobs.SetSpec]:
        specs = []
        for label, (kind, first, second, box) in self._entries.items():
            if kind == "folders":
                specs.append(_jobs.SetSpec(label, box, micrographs_dir=first,
                                           coordinates_dir=second))
                continue
            missing = [layer.name for layer in (first, second) if layer not in self.viewer.layers]
            if missing:
                raise ValueError(f"{label}: layer {missing[0]} is no longer in the viewer")
            specs.append(layer_set(label, first, second, box))
        return specs

    # -- training -------------------------------------------------------------------------------
    def _on_run_clicked(self) -> None:
        try:
            specs = self._specs()
        except ValueError as exc:
            self._fail(str(exc))
            return
        params = TrainParameters(specs, self.mode.value, self.init.value, self.epochs.value,
                                 self.device.value, self.model_name.value)
        error = params.validation_error()
        if error:
            self._fail(error)
            return
        self._trainer = None
        self._draw_history([])
        self._start(_jobs.train(**params.as_core_arguments()), on_yield=self._on_step,
                    on_return=self._on_trained, on_abort=self._on_stopped, total=1000,
                    text=f"training on {len(specs)} set(s)...")

    def _on_step(self, step) -> None:
        if isinstance(step, Trainer):
            self._trainer = step
            self.device_label.value = f"uses {step.device}"
            return
        if step.stage == "extract":
            self.status.value = f"extracting examples: micrograph {step.batch}/{step.n_batches}"
            return
        done = (step.epoch - 1 + step.batch / max(step.n_batches, 1)) / max(step.n_epochs, 1)
        self.progress.value = int(1000 * done)
        self.status.value = f"epoch {step.epoch}/{step.n_epochs}, loss {step.train_loss:.3f}"
        if step.message == "epoch done":
            self._draw_history(self._trainer.history)

    def _draw_history(self, history) -> None:
        plot = self.plot
        plot.clear(title="training", xlabel="epoch", ylabel="loss")
        if history:
            epochs = [h.epoch for h in history]
            plot.axes.plot(epochs, [h.train_loss for h in history], "o-", ms=3, label="train loss")
            plot.axes.plot(epochs, [h.val_loss for h in history], "o-", ms=3,
                           label="validation loss")
            best = history[-1].best_epoch
            accuracy = next((h.val_accuracy for h in history if h.epoch == best), float("nan"))
            plot.axes.axvline(best, color="grey", ls="--", lw=0.8,
                              label=f"best epoch {best} (accuracy {accuracy:.2f})")
            plot.axes.set_xlim(0.5, max(epochs[-1], history[-1].n_epochs) + 0.5)
            plot.legend(loc="upper right")
        plot.draw()

    def _keep(self, model, how: str) -> None:
        self.model = model
        name = MODELS.add(self.model_name.value.strip(), model)
        summary = model.metadata.get("training", {})
        text = (f"{how}: '{name}' (best epoch {summary.get('best_epoch', '?')} of "
                f"{summary.get('epochs_run', '?')}), ready in the Pick panel")
        self.status.value = text
        show_info(f"napari-deeppicker: {text}")

    def _on_trained(self, model) -> None:
        self._keep(model, "trained")

    def _on_stopped(self) -> None:
        if self._trainer is not None and self._trainer.history:
            self._keep(self._trainer.best_model, "stopped; kept the best model so far")
        else:
            self.status.value = "stopped before the first epoch ended: no model"

    def _on_save_clicked(self) -> None:
        from napari_deeppicker.core.model import save_model

        if self.model is None:
            self._fail("Train a model first.")
            return
        path = self.save_path.value
        if not path or Path(path).is_dir() or str(path) in ("", "."):
            self._fail("Choose a file to save the model to.")
            return
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path.with_name(path.name + ".safetensors")
        try:
            save_model(self.model, path)
        except OSError as exc:
            self._report(exc)
            return
        self.status.value = f"saved {path}"
        show_info(f"napari-deeppicker: model saved to {path}")
