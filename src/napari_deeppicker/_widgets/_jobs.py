"""The work the docks hand to their worker: generators over the core, free of Qt and layers.

Each job takes plain data (arrays, DataFrames, configs, a model or a model file), yields progress
objects and returns its result; the dock turns these into layers on the main thread. Grad mode is
thread-local, so picking enters ``torch.inference_mode()`` here, in the worker, and leaves it
before every ``yield`` (a pool thread must not stay in inference mode after a stopped job).
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from napari_deeppicker.core.errors import TrainingDataError

log = logging.getLogger(__name__)


@dataclass
class PickStep:
    """One micrograph picked: ``index`` is its slice in a stack (0 for a single micrograph)."""

    index: int
    done: int
    total: int
    picks: pd.DataFrame
    score_map: object
    device: str


@dataclass
class SetSpec:
    """One training set as the Train dock collected it: layer data, or folders to read.

    Parameters
    ----------
    name : str
        Label in the list and in the model's training summary.
    box : int
        Particle box in micrograph pixels.
    images : list of ndarray
        Micrographs taken from layers (one per slice of a stack).
    coordinates : list of DataFrame
        Particle centres (x, y) per micrograph.
    micrographs_dir, coordinates_dir : Path, optional
        Folders read in the worker instead (paired by file stem).
    """

    name: str
    box: int
    images: list = field(default_factory=list)
    coordinates: list = field(default_factory=list)
    micrographs_dir: Path | None = None
    coordinates_dir: Path | None = None


def resolve_model(spec, device: str):
    """A ready model: ``spec`` is a PickerModel, a built-in model name or a model file path."""
    from napari_deeppicker.core.model import PickerModel, load_model, select_device

    target = select_device(device)
    if isinstance(spec, PickerModel):
        return spec.to(target)
    return load_model(spec, device=target)


def pick_images(model, images: dict, box: float, config, device: str) -> Generator:
    """Pick every micrograph of ``images`` ({slice: array}); yield a :class:`PickStep` each.

    Returns the model used (loaded on ``device``).
    """
    import torch

    from napari_deeppicker.core.picking import pick_micrograph

    model = resolve_model(model, device)
    total = len(images)
    for done, (index, image) in enumerate(images.items(), start=1):
        with torch.inference_mode():
            image = np.asarray(image, dtype=np.float32)
            picks, score_map = pick_micrograph(model, image, box, config, device=model.device)
        yield PickStep(index, done, total, picks, score_map, str(model.device))
    return model


def retrain_and_pick(model, images: dict, positives: dict, negatives: dict, avoid: dict, box: float,
                     train_config, pick_config, device: str) -> Generator:
    """Fine-tune ``model`` on edited picks, then pick the same micrographs again.

    Parameters
    ----------
    model : PickerModel
        The model that made the picks.
    images : dict of int to ndarray
        Micrographs by slice.
    positives, negatives, avoid : dict of int to DataFrame
        Kept and added picks; deleted picks (hard negatives); picks hidden by the threshold
        (neither positive nor negative: random negatives keep away from them).
    box : float
        Particle box in micrograph pixels.
    train_config : TrainConfig
        Few epochs, small patience.
    pick_config : PickConfig
        As for picking.
    device : str
        "auto", "cpu" or "cuda".

    Yields
    ------
    TrainProgress, then PickStep
    """
    from napari_deeppicker.core.training import Trainer, TrainingSet

    keys = list(images)
    tset = TrainingSet([images[k] for k in keys], [positives[k] for k in keys], box,
                       hard_negatives=[negatives[k] for k in keys], avoid=[avoid[k] for k in keys],
                       name="edited picks")
    trainer = Trainer([tset], train_config, init=resolve_model(model, device))
    yield from trainer.run()
    return (yield from pick_images(trainer.best_model, images, box, pick_config, device))


def _folder_set(spec: SetSpec):
    """A TrainingSet from a micrographs folder and a coordinates folder (or file), by stem."""
    from napari_deeppicker.core.io import (
        file_stem,
        list_micrographs,
        read_coordinates_by_micrograph,
    )
    from napari_deeppicker.core.training import TrainingSet

    micrographs = list_micrographs(spec.micrographs_dir)
    coords = {file_stem(k): v for k, v in
              read_coordinates_by_micrograph(spec.coordinates_dir, box=spec.box).items()}
    paired = [(path, coords[file_stem(path)]) for path in micrographs if file_stem(path) in coords]
    if not paired:
        raise TrainingDataError(f"{spec.micrographs_dir}: no micrograph has coordinates in "
                                f"{spec.coordinates_dir} (files are paired by name)")
    log.info("%s: %d of %d micrographs have coordinates", spec.name, len(paired), len(micrographs))
    return TrainingSet([p for p, _ in paired], [c for _, c in paired], spec.box, name=spec.name)


def _training_set(spec: SetSpec):
    from napari_deeppicker.core.training import TrainingSet

    if spec.micrographs_dir is not None:
        return _folder_set(spec)
    return TrainingSet(list(spec.images), list(spec.coordinates), spec.box, name=spec.name)


def merge_sets(sets: list, name: str):
    """One TrainingSet holding every micrograph of ``sets`` (all of the same molecule and box)."""
    from napari_deeppicker.core.training import TrainingSet

    return TrainingSet([m for s in sets for m in s.micrographs],
                       [c for s in sets for c in s.coordinates], sets[0].box, name=name)


def train(specs: list[SetSpec], merge: bool, config, init) -> Generator:
    """Train a model on the sets of ``specs``; each spec is one molecule unless ``merge``.

    Yields the :class:`~napari_deeppicker.core.training.Trainer` once (so that Stop can keep its
    best model), then its progress; returns the best model.
    """
    from napari_deeppicker.core.training import Trainer

    sets = [_training_set(spec) for spec in specs]
    if merge:
        sets = [merge_sets(sets, "target")]
    init_model = None if init is None else resolve_model(init, config.device or "auto")
    trainer = Trainer(sets, config, init=init_model)
    yield trainer
    yield from trainer.run()
    return trainer.best_model


@dataclass
class Evaluation:
    """What ``evaluate_picks`` returns: the report on the shown picks, the curve on all picks."""

    report: object
    ranked: object
    shown: dict
    reference: dict
    stack: bool


def _by_slice(df: pd.DataFrame, stack: bool) -> dict:
    if not stack:
        return {"0": df.reset_index(drop=True)}
    return {str(k): g.reset_index(drop=True) for k, g in df.groupby("slice")}


def evaluate_picks(picks, shown, reference, reference_file, micrographs, box, radius) -> Generator:
    """Match the shown picks with the reference (a table, or a file read here); rank all picks.

    Yields once (reference read); returns an :class:`Evaluation`. Micrographs are keyed by
    slice (``"0"`` for a single micrograph); ``shown`` keeps each pick's layer ``row``.
    """
    from napari_deeppicker._layers import slices_from_micrographs
    from napari_deeppicker.core.errors import CoordinatesError
    from napari_deeppicker.core.evaluation import evaluate
    from napari_deeppicker.core.io import read_coordinates

    stack = "slice" in picks.columns
    if reference is None:
        reference = read_coordinates(reference_file, box=box)
        if stack:
            if not (micrographs and "micrograph" in reference.columns):
                raise CoordinatesError(f"{reference_file}: for a stack, the file must name the "
                                       "micrographs of the stack's slices (or use a points layer)")
            reference = slices_from_micrographs(reference, micrographs)
    yield "reference read"
    picks = picks.assign(row=np.arange(len(picks)))
    shown_by, all_by = _by_slice(picks[shown], stack), _by_slice(picks, stack)
    refs_by = _by_slice(reference, stack)
    report = evaluate(shown_by, refs_by, box, radius)
    ranked = evaluate(all_by, refs_by, box, radius)
    return Evaluation(report, ranked, shown_by, refs_by, stack)
