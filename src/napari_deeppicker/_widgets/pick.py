"""The Pick dock: pick particles in a micrograph (or a stack), edit the picks, retrain from edits.

Produces ``"<image> picks"`` (points sized to the box, coloured by score, features ``score`` and
``source``) and ``"<image> scores"`` (the score map, overlaid exactly). The threshold slider only
changes which picks are shown; picking keeps every candidate above ``PICK_FLOOR``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSlider,
    PushButton,
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
from napari_deeppicker._widgets._edits import (
    EditTracker,
    RetrainParameters,
    empty_picks,
    image_data,
    merge_picks,
)
from napari_deeppicker._widgets._parameters import BATCHES, FROM_FILE, PickParameters, model_choices
from napari_deeppicker._widgets._preview import remove_box_preview, show_box_preview
from napari_deeppicker.core.nullcheck import is_particle_free
from napari_deeppicker.core.picking import ScoreMap
from napari_deeppicker.core.training import TrainProgress

log = logging.getLogger(__name__)

@dataclass
class _Job:
    image: object
    box: int
    slices: list[int] | None
    kind: str
    started: float = field(default_factory=time.perf_counter)
    steps: list = field(default_factory=list)


class PickWidget(DockWidget):
    """Pick particles with a DeepPicker model; edit the picks and retrain from the edits.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, run_text="Pick")
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.batch = ComboBox(choices=BATCHES, value=BATCHES[0], label="slices")
        self.model = ComboBox(choices=model_choices, label="model")
        self.model_file = FileEdit(mode="r", filter="*.safetensors", label="model file")
        self.box = SpinBox(value=64, min=8, max=4096, step=2, label="box (px)")
        self.threshold = FloatSlider(value=0.5, min=0.0, max=1.0, step=0.01, label="threshold")
        self.null_check = CheckBox(value=True, text="no picks on particle-free micrographs",
                                   tooltip="Compare each micrograph with its phase-randomised "
                                           "noise null; keep no pick where nothing scores higher "
                                           "than on the null (the 'Einstein from noise' guard)")
        self.device = ComboBox(choices=DEVICES, value="auto", label="device")
        self.device_label = text_label(device_text("auto"))
        self.epochs = SpinBox(value=3, min=1, max=50, label="retrain epochs")
        self.retrain_button = PushButton(text="Retrain from edits")
        help_text = text_label("<b>Edit and retrain</b>: edit the picks with the points tools "
                               "(added points are manual, deleted picks become negatives), then "
                               "retrain the model on the edits and pick again.")
        self.extend([self.image, self.batch, self.model, self.model_file, self.box, self.threshold,
                     self.null_check,
                     row(self.device, self.device_label, label="device"), *self._controls(),
                     help_text, self.epochs, self.retrain_button])
        self._busy_widgets.append(self.retrain_button)
        self._model = None
        self._job: _Job | None = None
        self._trackers: dict[str, EditTracker] = {}
        self._maps: dict[str, dict[int, ScoreMap]] = {}
        self.last_retrain_seconds: float | None = None
        self.image.changed.connect(self._on_image_changed)
        self.model_file.changed.connect(self._on_model_file_changed)
        self.box.changed.connect(self._on_box_changed)
        self.threshold.changed.connect(self._on_threshold_changed)
        self.device.changed.connect(self._on_device_changed)
        self.retrain_button.changed.connect(self._on_retrain_clicked)
        self._connect(MODELS.changed, self.model.reset_choices)
        self._on_image_changed(self.image.value)

    # -- inputs ---------------------------------------------------------------------------------
    def _on_image_changed(self, layer) -> None:
        self.batch.visible = layer is not None and np.ndim(image_data(layer)) == 3 and not layer.rgb

    def _on_model_file_changed(self, path) -> None:
        if path and Path(path).is_file():
            self.model.value = FROM_FILE

    def _on_device_changed(self, name: str) -> None:
        self.device_label.value = device_text(name)

    def _on_box_changed(self, box: int) -> None:
        show_box_preview(self.viewer, self.image.value, self.box.value)

    def _on_threshold_changed(self, value: float) -> None:
        layer = self._picks_layer(self.image.value)
        if layer is not None:
            self._apply_threshold(layer)
            if not self.running:
                self.status.value = f"{int(np.sum(layer.shown))} picks shown (threshold {value:.2f})"

    def _apply_threshold(self, layer) -> None:
        score = layer.features["score"].to_numpy(float)
        shown = ~(score < self.threshold.value)  # manual points (NaN score) stay shown
        layer.shown = shown
        # napari 0.9 draws every point of a layer without sliced dims whatever `shown` says;
        # a zero border on the transparent face hides them there too.
        layer.border_width = np.where(shown, _layers._BORDER_WIDTH, 0.0)
        layer.metadata.setdefault(_layers.METADATA_KEY, {})["threshold"] = self.threshold.value

    def _picks_layer(self, image):
        name = None if image is None else f"{image.name} picks"
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _current_slice(self, image) -> int:
        position = image.world_to_data(self.viewer.dims.point)
        return int(np.clip(np.round(position[0]), 0, np.shape(image_data(image))[0] - 1))

    def _slices(self, image) -> list[int] | None:
        if image is None or np.ndim(image_data(image)) != 3:
            return None
        if self.batch.value == BATCHES[1]:
            return list(range(np.shape(image_data(image))[0]))
        return [self._current_slice(image)]

    def _parameters(self) -> PickParameters:
        image = self.image.value
        return PickParameters(image, self.model.value, self.model_file.value, self.box.value,
                              self.threshold.value, self.device.value, self._slices(image),
                              self.null_check.value)

    # -- picking --------------------------------------------------------------------------------
    def _on_run_clicked(self) -> None:
        params = self._parameters()
        error = params.validation_error()
        if error:
            self._fail(error)
            return
        args = params.as_core_arguments()
        self._job = _Job(params.image, params.box, params.slices, "pick")
        n = len(args["images"])
        self._start(_jobs.pick_images(**args), on_yield=self._on_step, on_return=self._on_picked,
                    on_abort=self._on_stopped, total=1000, text=f"picking {n} micrograph(s)...")

    def _on_step(self, step) -> None:
        if isinstance(step, TrainProgress):
            done = (step.epoch - 1 + step.batch / max(step.n_batches, 1)) / max(step.n_epochs, 1)
            self.progress.value = int(800 * done) if step.stage == "train" else 0
            self.status.value = f"retraining: epoch {step.epoch}/{step.n_epochs}"
            return
        self._job.steps.append(step)
        start = 800 if self._job.kind == "retrain" else 0
        self.progress.value = start + int((1000 - start) * step.done / step.total)
        self.status.value = f"picked {step.done}/{step.total} micrograph(s)"
        self.device_label.value = f"uses {step.device}"

    def _on_picked(self, model) -> None:
        self._model = model
        n = self._show_results()
        seconds = time.perf_counter() - self._job.started
        self.status.value = f"{n} picks shown ({seconds:.1f} s)"
        message = f"napari-deeppicker: {n} picks above threshold {self.threshold.value:.2f}"
        free = [s.index for s in self._job.steps if is_particle_free(s.picks)]
        if free:
            where = "" if self._job.slices is None else f" (slices {free[:10]})"
            message += (f"; {len(free)} micrograph(s){where} look particle-free: nothing scores "
                        "higher than on their noise null, no pick kept")
        show_info(message)

    def _on_stopped(self) -> None:
        if self._job is not None and self._job.steps:
            n = self._show_results()
            done = len(self._job.steps)
            self.status.value = f"stopped: {done} micrograph(s) picked, {n} picks shown"

    def _show_results(self) -> int:
        """Build or update the picks and scores layers from the job's steps; picks shown."""
        job = self._job
        image, stack = job.image, job.slices is not None
        name = image.name
        parts = [s.picks.assign(slice=s.index) if stack else s.picks for s in job.steps]
        new = pd.concat(parts, ignore_index=True) if parts else empty_picks(stack)
        slices = sorted({s.index for s in job.steps}) if stack else None
        self._update_scores(image, job.steps, stack)
        layer = self._picks_layer(image)
        tracker = self._trackers.get(name)
        if tracker is not None and tracker.layer is not layer:  # the user removed the layer
            tracker.detach()
            tracker = None
        current = empty_picks(stack) if layer is None else _layers.coordinates_from_points(layer)
        deleted = tracker.current_deleted(current) if tracker else empty_picks(stack)
        merged = merge_picks(current, new, slices, deleted, job.box)
        meta = {"threshold": self.threshold.value, "model": self._model_label()}
        micrographs = _layers.deeppicker_metadata(image).get("micrographs")
        if micrographs:
            meta["micrographs"] = list(micrographs)
        data = _layers.points_layer_data(merged, name=f"{name} picks", box=job.box,
                                         image_layer=image, metadata=meta)
        if layer is not None:
            layer.selected_data = set()  # indices of the old points would outlive them
            if layer.border_color_mode != "colormap":
                # coloured by match after an evaluation: back to colormap via direct colours
                layer.border_color = "white"
        with tracker.updating() if tracker else contextlib.nullcontext():
            layer = _layers.update_or_add(self.viewer, data)
        if tracker is None:
            tracker = self._trackers[name] = EditTracker(layer, job.box)
        tracker.attach(layer)
        tracker.record(current, merged[merged["source"] == "model"], job.box)
        self._apply_threshold(layer)
        remove_box_preview(self.viewer)
        return int(np.count_nonzero(layer.shown))

    def _update_scores(self, image, steps, stack: bool) -> None:
        if not steps:
            return
        maps = self._maps.setdefault(image.name, {})
        ref = steps[-1].score_map
        for key, old in list(maps.items()):
            if old.data.shape != ref.data.shape or not (np.allclose(old.origin, ref.origin)
                                                        and np.allclose(old.spacing, ref.spacing)):
                del maps[key]
        maps.update({s.index: s.score_map for s in steps})
        if stack:
            blank = ScoreMap(np.zeros_like(ref.data), ref.origin, ref.spacing)
            n = np.shape(image_data(image))[0]
            score_map = [maps.get(k, blank) for k in range(n)]
        else:
            score_map = ref
        data = _layers.score_map_layer_data(score_map, name=f"{image.name} scores",
                                            image_layer=image)
        if data[1]["name"] not in self.viewer.layers and self._picks_layer(image) is not None:
            layer = _layers.update_or_add(self.viewer, data)
            self.viewer.layers.move(self.viewer.layers.index(layer),
                                    self.viewer.layers.index(self._picks_layer(image)))
        else:
            _layers.update_or_add(self.viewer, data)

    def _model_label(self) -> str:
        meta = getattr(self._model, "metadata", {}) or {}
        return str(meta.get("path") or self.model.value)

    # -- retrain from edits ---------------------------------------------------------------------
    def _on_retrain_clicked(self) -> None:
        started = time.perf_counter()
        image = self.image.value
        params = RetrainParameters(image, self._picks_layer(image),
                                   self._trackers.get(getattr(image, "name", None)), self._model,
                                   self.epochs.value, self.threshold.value, self.device.value)
        error = params.validation_error()
        if error:
            self._fail(error)
            return
        args = params.as_core_arguments()
        self._job = _Job(image, params.tracker.box, params.slices(), "retrain", started)
        n_pos, n_neg = (sum(len(df) for df in args[k].values()) for k in ("positives", "negatives"))
        self._start(_jobs.retrain_and_pick(**args), on_yield=self._on_step,
                    on_return=self._on_retrained, total=1000,
                    text=f"retraining on {n_pos} picks, {n_neg} deleted...")

    def _on_retrained(self, model) -> None:
        name = MODELS.add(f"{self._job.image.name} retrained", model)
        self.model.reset_choices()
        self.model.value = name
        self._model = model
        n = self._show_results()
        self.last_retrain_seconds = time.perf_counter() - self._job.started
        log.info("retrain from edits: %.2f s from click to new picks", self.last_retrain_seconds)
        seconds = self.last_retrain_seconds
        self.status.value = f"retrained and re-picked in {seconds:.1f} s: {n} picks"
        show_info(f"napari-deeppicker: model '{name}' retrained, {n} picks")

    def _on_close(self) -> None:
        super()._on_close()
        for tracker in self._trackers.values():
            tracker.detach()
        remove_box_preview(self.viewer)
