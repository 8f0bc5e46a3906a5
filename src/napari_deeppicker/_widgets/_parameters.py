"""Dataclasses between the docks' values and core arguments (validation, conversion)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_deeppicker._widgets._base import MODELS
from napari_deeppicker._widgets._edits import PICK_FLOOR, image_data
from napari_deeppicker.core.picking import PickConfig

GENERAL = "general"
GENERAL_MISSING = "general (not installed)"
FROM_FILE = "model file below"
BATCHES = ("current slice", "all slices")


def model_choices(widget=None) -> list[str]:
    """The shipped model (or its placeholder), the models trained this session, a model file."""
    from napari_deeppicker.core.model import builtin_model_path

    general = GENERAL if builtin_model_path(GENERAL).is_file() else GENERAL_MISSING
    return [general, *MODELS.names(), FROM_FILE]


@dataclass
class PickParameters:
    """Widget values -> core arguments of :func:`~napari_deeppicker._widgets._jobs.pick_images`."""

    image: object
    model: str
    model_file: Path | None
    box: int
    threshold: float
    device: str
    slices: list[int] | None = field(default=None)
    null_check: bool = True

    def validation_error(self) -> str | None:
        """What is wrong with the values, or None."""
        if self.image is None:
            return "Choose an image layer to pick."
        shape = np.shape(image_data(self.image))
        if self.image.rgb or len(shape) not in (2, 3):
            return (f"{self.image.name}: a 2D micrograph or a stack of micrographs is needed, "
                    f"got shape {shape}")
        if self.box > min(shape[-2:]):
            return (f"{self.image.name}: box of {self.box} px is larger than the image "
                    f"({shape[-1]} x {shape[-2]} px)")
        if self.model == GENERAL_MISSING:
            return "The general model is not installed: choose a model file (or train one)."
        if self.model == FROM_FILE and not (self.model_file and Path(self.model_file).is_file()):
            return "Choose a model file (.safetensors)."
        return None

    def images(self) -> dict:
        """{slice: array} of the micrographs to pick (slice 0 for a single micrograph)."""
        data = image_data(self.image)
        if self.slices is None:
            return {0: data}
        return {k: data[k] for k in self.slices}

    def as_core_arguments(self) -> dict:
        """Keyword arguments of :func:`~napari_deeppicker._widgets._jobs.pick_images`."""
        if self.model == FROM_FILE:
            model = Path(self.model_file)
        elif self.model in MODELS:
            model = MODELS.get(self.model)
        else:
            model = self.model
        return {"model": model, "images": self.images(), "box": self.box, "device": self.device,
                "config": PickConfig(threshold=min(self.threshold, PICK_FLOOR),
                                     null_check=self.null_check)}


MODES = ("other molecules (fully automated)", "target picks (semi-automated)")
NEW_NETWORK = "new network"


def init_choices(widget=None) -> list[str]:
    """Starting points for training: a fresh network, the shipped model, the session's models."""
    return [NEW_NETWORK, *model_choices()[:-1]]


@dataclass
class TrainParameters:
    """Train dock values -> arguments of :func:`~napari_deeppicker._widgets._jobs.train`.

    ``sets`` holds one :class:`~napari_deeppicker._widgets._jobs.SetSpec` per list entry. In
    the fully automated mode each is another molecule (one TrainingSet each, equal shares); in
    the semi-automated mode they are all micrographs of the target (merged into one set).
    """

    sets: list
    mode: str
    init: str
    epochs: int
    device: str
    name: str

    @property
    def merge(self) -> bool:
        """True in the semi-automated mode."""
        return self.mode == MODES[1]

    def validation_error(self) -> str | None:
        """What is wrong with the values, or None."""
        if not self.sets:
            return "Add at least one training set: an (image, points) pair or two folders."
        for spec in self.sets:
            if spec.micrographs_dir is None and sum(len(c) for c in spec.coordinates) == 0:
                return f"{spec.name}: no points to train on."
        if self.merge and len({spec.box for spec in self.sets}) > 1:
            return "Semi-automated training is for one molecule: give every set the same box."
        if self.init == GENERAL_MISSING:
            return "The general model is not installed: start from a new network."
        if not self.name.strip():
            return "Give the model a name."
        return None

    def as_core_arguments(self) -> dict:
        """Keyword arguments of ``_jobs.train``."""
        from napari_deeppicker.core.training import TrainConfig

        init = None if self.init == NEW_NETWORK else (
            MODELS.get(self.init) if self.init in MODELS else self.init)
        return {"specs": list(self.sets), "merge": self.merge, "init": init,
                "config": TrainConfig(epochs=self.epochs, device=self.device)}


@dataclass
class EvaluateParameters:
    """Evaluate dock values -> arguments of ``_jobs.evaluate_picks``."""

    picks: object
    reference: object
    reference_file: Path | None
    box: int
    radius: float

    def validation_error(self) -> str | None:
        """What is wrong with the values, or None."""
        if self.picks is None:
            return "Choose the picks layer to evaluate."
        has_file = bool(self.reference_file) and Path(self.reference_file).is_file()
        if self.reference is None and not has_file:
            return "Choose a reference points layer or a reference coordinates file."
        if self.reference is self.picks:
            return "The reference layer must not be the picks layer itself."
        if self.reference is not None and self.reference.ndim != self.picks.ndim:
            return f"{self.reference.name} and {self.picks.name} differ in dimensions."
        if not 0 < self.radius <= 1:
            return "The match radius is a fraction of the box between 0 and 1."
        return None

    def as_core_arguments(self) -> dict:
        """Keyword arguments of ``_jobs.evaluate_picks`` (shown picks are the ones evaluated)."""
        from napari_deeppicker._layers import coordinates_from_points, deeppicker_metadata

        picks = coordinates_from_points(self.picks)
        reference = None
        if self.reference is not None:
            shown = np.asarray(self.reference.shown, bool)
            reference = coordinates_from_points(self.reference)[shown]
        return {"picks": picks, "shown": np.asarray(self.picks.shown, bool), "reference": reference,
                "reference_file": None if reference is not None else Path(self.reference_file),
                "micrographs": deeppicker_metadata(self.picks).get("micrographs"),
                "box": self.box, "radius": self.radius}
