"""``deeppicker train``: one training set per --micrographs/--coords/--box triple, then train."""

from __future__ import annotations

import logging
import math
import os
import shlex
from pathlib import Path

from napari_deeppicker._cli_common import (
    EXIT_INTERRUPTED,
    note,
    progress_bar,
    resolve_device,
)
from napari_deeppicker.core.errors import DeepPickerError, TrainingDataError

logger = logging.getLogger(__name__)


def per_set(values: list | None, n_sets: int, option: str, default=None) -> list:
    """Spread an option given once (or never) over all sets, or check it is given once per set.

    Raises
    ------
    DeepPickerError
        If the option is given a number of times other than 0, 1 or ``n_sets``.
    """
    if not values:
        return [default] * n_sets
    if len(values) == 1:
        return list(values) * n_sets
    if len(values) != n_sets:
        raise DeepPickerError(
            f"{option} is given {len(values)} times for {n_sets} training sets: give it once "
            "(same for all) or once per --micrographs"
        )
    return list(values)


def inverted_sets(invert: list[int] | None, n_sets: int) -> list[bool]:
    """``--invert`` alone: every set; ``--invert 2 3``: those sets (counted from 1)."""
    if invert is None:
        return [False] * n_sets
    if not invert:
        return [True] * n_sets
    bad = [k for k in invert if not 1 <= k <= n_sets]
    if bad:
        raise DeepPickerError(
            f"--invert {bad[0]}: there are only {n_sets} training sets (1 to {n_sets})")
    return [k + 1 in invert for k in range(n_sets)]


def load_training_set(micrographs: str, coords: str, box: int, invert: bool):
    """Pair the micrographs of one dataset with their coordinates and check them.

    Parameters
    ----------
    micrographs : str
        A folder of ``*.mrc`` files, a file or a glob pattern.
    coords : str
        A folder of per-micrograph coordinates files (paired by stem, ``mic1_autopick.star``
        pairs with ``mic1.mrc``), or one multi-micrograph STAR/Topaz file.
    box : int
        Particle box in micrograph pixels.
    invert : bool
        Particles are bright on the background.

    Returns
    -------
    training_set : TrainingSet
        Micrograph paths (read again during extraction) and their coordinates.
    info : dict
        Provenance for the model metadata (paths, counts, skipped micrographs).

    Raises
    ------
    DeepPickerError
        If a file is unreadable, the box does not fit a micrograph, coordinates fall outside
        their micrograph, or no micrograph has coordinates.
    """
    from napari_deeppicker.core._files import file_stem, match_stem
    from napari_deeppicker.core.io import (
        check_coordinates_in_image,
        list_micrographs,
        read_coordinates_by_micrograph,
        read_micrograph,
    )
    from napari_deeppicker.core.preprocess import check_box
    from napari_deeppicker.core.training import TrainingSet

    paths = list_micrographs(micrographs)
    by_stem = {file_stem(p): p for p in paths}
    found = read_coordinates_by_micrograph(coords, box=box)
    candidates: dict[Path, list[tuple[bool, str]]] = {}
    for key in found:
        stem = match_stem(key, by_stem)
        if stem is None:
            logger.info("%s: coordinates of %s match no micrograph in %s", coords, key, micrographs)
            continue
        candidates.setdefault(by_stem[stem], []).append((key == stem, key))
    paired: dict[Path, str] = {}
    for path, keys in candidates.items():
        best = [k for exact, k in keys if exact] or [k for _, k in keys]
        if len(best) > 1:
            raise DeepPickerError(f"{coords}: {' and '.join(best)} all match micrograph {path}")
        paired[path] = best[0]
    skipped = [p for p in paths if p not in paired]
    for path in skipped:
        logger.warning("%s has no coordinates in %s: skipped", path, coords)
    if not paired:
        raise TrainingDataError(f"no micrograph in {micrographs} has coordinates in {coords}")
    mics, tables = [], []
    for path in paths:
        if path not in paired:
            continue
        table = found[paired[path]]
        image = read_micrograph(path).data
        check_box(box, image.shape, str(path))
        check_coordinates_in_image(table, image.shape, f"{coords} ({path.name})")
        mics.append(path)
        tables.append(table)
    name = os.fspath(micrographs)
    info = {"name": name, "micrographs": str(Path(micrographs).resolve()),
            "coords": str(Path(coords).resolve()), "box": int(box), "invert": bool(invert),
            "n_micrographs": len(mics), "n_particles": int(sum(len(t) for t in tables)),
            "skipped": [p.name for p in skipped]}
    return TrainingSet(mics, tables, box, invert=invert, name=name), info


def _postfix(step) -> dict:
    values = {"epoch": f"{step.epoch}/{step.n_epochs}", "loss": f"{step.train_loss:.3f}"}
    if not math.isnan(step.val_accuracy):
        values["val_acc"] = f"{step.val_accuracy:.3f}"
    return values


def run_training(trainer, time_limit: float | None = None) -> bool:
    """Run a Trainer with progress bars; return False if it was stopped early by the time limit.

    Parameters
    ----------
    trainer : Trainer
        The configured trainer.
    time_limit : float, optional
        Stop after this many seconds of training once at least one epoch has finished.
    """
    import time

    extract = progress_bar(desc="extracting examples", unit="micrograph")
    train = None
    start = None
    try:
        for step in trainer.run():
            if step.stage == "extract":
                extract.total = step.n_batches
                extract.update(step.batch - extract.n)
                if extract.n >= extract.total:
                    extract.close()
                continue
            if train is None:
                start = time.perf_counter()
                # A time-limited run shows seconds: its epoch count is only an upper bound.
                if time_limit is None:
                    total, unit = step.n_epochs * step.n_batches, "batch"
                else:
                    total, unit = time_limit, "s"
                train = progress_bar(desc="training", unit=unit, total=total)
            elapsed = time.perf_counter() - start
            if time_limit is None:
                train.update((step.epoch - 1) * step.n_batches + step.batch - train.n)
            else:
                train.update(round(min(elapsed, time_limit) - train.n, 1))
            if step.message == "epoch done":
                train.set_postfix(_postfix(step))
            if time_limit is not None and trainer.history and elapsed > time_limit:
                return False
    finally:
        extract.close()
        if train is not None:
            train.close()
    return True


def cmd_train(args) -> int:
    """Train a model (``deeppicker train``); returns the exit code."""
    from napari_deeppicker.core.model import load_model, save_model
    from napari_deeppicker.core.training import TrainConfig, Trainer

    if len(args.micrographs) != len(args.coords):
        raise DeepPickerError(
            f"give one --coords per --micrographs (got {len(args.micrographs)} --micrographs and "
            f"{len(args.coords)} --coords)"
        )
    n_sets = len(args.micrographs)
    boxes = per_set(args.box, n_sets, "--box")
    inverts = inverted_sets(args.invert, n_sets)
    device = resolve_device(args.device)
    sets, infos = [], []
    for mics, coords, box, invert in zip(args.micrographs, args.coords, boxes, inverts):
        tset, info = load_training_set(mics, coords, box, invert)
        sets.append(tset)
        infos.append(info)
        note(f"training set {info['name']}: {info['n_micrographs']} micrographs, "
             f"{info['n_particles']} particles, box {box} px")
    init = load_model(args.init, device=device) if args.init else None
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         patience=args.patience, seed=args.seed, max_per_set=args.max_per_set,
                         device=str(device))
    trainer = Trainer(sets, config, init=init)
    interrupted = False
    try:
        run_training(trainer)
    except KeyboardInterrupt:
        interrupted = True
    if not trainer.history:
        note("interrupted before the first epoch finished: no model saved" if interrupted
             else "no epoch finished: no model saved")
        return EXIT_INTERRUPTED if interrupted else 1
    model = trainer.best_model
    model.metadata["datasets"] = infos
    model.metadata["command"] = shlex.join(["deeppicker", *getattr(args, "argv", [])])
    if args.init:
        model.metadata["init"] = str(args.init)
    save_model(model, args.out)
    summary = model.metadata["training"]
    message = (f"saved the best model (epoch {summary['best_epoch']} of {summary['epochs_run']}, "
               f"validation accuracy {summary['best_val_accuracy']:.3f}) to {args.out}")
    if interrupted:
        note(f"interrupted: {message}")
        return EXIT_INTERRUPTED
    note(message)
    return 0
