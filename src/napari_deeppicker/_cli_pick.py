"""``deeppicker pick``: pick micrographs (optionally after self-training) and write the picks."""

from __future__ import annotations

import datetime as _dt
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_deeppicker import __version__
from napari_deeppicker._cli_common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    error,
    note,
    progress_bar,
    resolve_device,
    write_json,
)
from napari_deeppicker.core.errors import DeepPickerError

logger = logging.getLogger(__name__)

SUFFIXES = {"star": ".star", "box": ".box", "csv": ".csv"}
SUMMARY_NAME = "pick_summary.json"


def read_checked(path: Path, box: int):
    """Read a micrograph and check that the box fits in it (the error names the file)."""
    from napari_deeppicker.core.io import read_micrograph
    from napari_deeppicker.core.preprocess import check_box

    mic = read_micrograph(path)
    check_box(box, mic.data.shape, str(path))
    return mic


def write_score_map(score_map, mic, outdir: Path, box: int, model_name: str) -> Path:
    """Write ``<stem>_scores.mrc`` and ``<stem>_scores.json``, which places it on the micrograph.

    Parameters
    ----------
    score_map : ScoreMap
        The dense particle probabilities.
    mic : Micrograph
        The micrograph it was computed on.
    outdir : pathlib.Path
        Output folder.
    box : int
        Particle box in micrograph pixels.
    model_name : str
        Recorded in the sidecar.

    Returns
    -------
    pathlib.Path
        The MRC file written.
    """
    from napari_deeppicker.core.io import write_micrograph

    path = outdir / f"{mic.name}_scores.mrc"
    origin = [float(v) for v in score_map.origin]
    spacing = [float(v) for v in score_map.spacing]
    pixel_size = None if mic.pixel_size is None else mic.pixel_size * float(np.mean(spacing))
    write_micrograph(path, score_map.data, pixel_size=pixel_size)
    write_json(path.with_suffix(".json"), {
        "micrograph": str(Path(mic.path).resolve()), "image_shape": list(mic.data.shape),
        "box": int(box), "model": model_name, "shape": list(score_map.data.shape), "origin": origin,
        "spacing": spacing,
        "description": "value [i, j] is the particle probability of the box centred on micrograph "
                       "pixel (row, col) = origin + (i, j) * spacing (row-major, pixel centres)",
        "napari": {"scale": spacing, "translate": origin},
    })
    return path


def pick_files(model, paths: Sequence[Path], box: int, config, outdir: Path, *, fmt: str = "star",
               scores: bool = False, device=None, picks: Sequence | None = None) -> Iterator[dict]:
    """Pick micrographs one by one and write their coordinates; yield one record per micrograph.

    Every file is written atomically as soon as its micrograph is done, so stopping the
    iteration (Ctrl-C) leaves only complete files. A micrograph that cannot be read is reported
    on stderr and yields a record with an ``error`` entry; the others go on.

    Parameters
    ----------
    model : PickerModel
        The model.
    paths : sequence of pathlib.Path
        Micrograph files.
    box : int
        Particle box in micrograph pixels.
    config : PickConfig
        Picking settings.
    outdir : pathlib.Path
        Output folder (must exist).
    fmt : {"star", "box", "csv"}
        Coordinates format.
    scores : bool
        Also write the score maps.
    device : torch.device, optional
        Device to compute on.
    picks : sequence of DataFrame, optional
        Picks already made (e.g. by self-training), one per path; then only the score maps
        are computed (when ``scores``).

    Yields
    ------
    dict
        ``micrograph``, ``n_picks``, ``file``, ``scores`` (or None), ``seconds``; or
        ``micrograph`` and ``error``.
    """
    from napari_deeppicker.core.io import write_coordinates
    from napari_deeppicker.core.nullcheck import is_particle_free
    from napari_deeppicker.core.picking import pick_micrograph, score_micrograph

    model_name = str(model.metadata.get("path", "model"))
    with progress_bar(total=len(paths), desc="picking", unit="micrograph") as bar:
        for k, path in enumerate(paths):
            start = time.perf_counter()
            try:
                mic = read_checked(path, box)
                if picks is None:
                    found, score_map = pick_micrograph(model, mic.data, box, config, device)
                else:
                    found = picks[k]
                    score_map = score_micrograph(model, mic.data, box, config=config,
                                                 device=device) if scores else None
            except DeepPickerError as err:
                error(err)
                yield {"micrograph": str(path.resolve()), "error": str(err)}
                bar.update()
                continue
            out = outdir / f"{mic.name}{SUFFIXES[fmt]}"
            write_coordinates(found[["x", "y", "score"]], out, box=box, fmt=fmt)
            score_file = None
            if scores:
                score_file = write_score_map(score_map, mic, outdir, box, model_name)
            bar.update()
            bar.set_postfix(picks=len(found))
            record = {"micrograph": str(path.resolve()), "n_picks": len(found),
                      "file": str(out), "scores": None if score_file is None else str(score_file),
                      "seconds": round(time.perf_counter() - start, 3)}
            if is_particle_free(found):
                record["particle_free"] = True
            yield record


def self_train(model, paths: Sequence[Path], box: int, config, args, device):
    """Run :class:`SelfTrainer` on the micrographs with a progress bar; return (model, picks)."""
    from napari_deeppicker.core.selftrain import SelfTrainer
    from napari_deeppicker.core.training import TrainConfig

    images = [read_checked(path, box).data for path in paths]
    train_config = TrainConfig(epochs=args.self_train_epochs, patience=3, seed=args.seed,
                               device=str(device))
    trainer = SelfTrainer(model, images, box, top_n=args.self_train_top,
                          iterations=args.self_train, pick_config=config, train_config=train_config)
    stage = None
    with progress_bar(desc="self-training") as bar:
        for step in trainer.run():
            train = step.train
            if train is None:
                kind, done, total = "picking", step.micrograph, step.n_micrographs
            elif train.stage == "extract":
                kind, done, total = "extracting examples", train.batch, train.n_batches
            else:
                kind = "training"
                done = (train.epoch - 1) * train.n_batches + train.batch
                total = train.n_epochs * train.n_batches
            if (step.iteration, kind) != stage:
                stage = (step.iteration, kind)
                where = ("final picks" if step.iteration > step.n_iterations
                         else f"round {step.iteration}/{step.n_iterations}")
                bar.reset(total=total)
                bar.set_description(f"self-training {where}: {kind}")
            bar.update(done - bar.n)
    return trainer.model, trainer.picks


def resolve_polarity(args, paths: Sequence[Path]) -> tuple[str, list[str]]:
    """The polarity to pick in ("dark" or "bright") and, for ``--polarity auto``, the votes."""
    if args.invert or args.polarity != "auto":
        return ("bright" if args.invert else args.polarity), []
    from napari_deeppicker.core.calibration import dataset_polarity

    images = (read_checked(path, args.box).data for path in paths)
    polarity, votes = dataset_polarity(images, args.box)
    note(f"estimated polarity: particles {polarity} ({votes.count(polarity)} of {len(votes)} "
         "micrographs)")
    return polarity, votes


def self_train_config(model, paths: Sequence[Path], box: int, config):
    """``config`` with a number for the threshold: self-training selects positives above it.

    With ``--threshold auto`` it is the median of the automatic thresholds of (up to) the first
    five micrographs.
    """
    if config.threshold != "auto":
        return config
    from napari_deeppicker.core.calibration import auto_threshold

    values = [auto_threshold(model, read_checked(path, box).data, box, config)
              for path in paths[:5]]
    return replace(config, threshold=min(float(np.median(values)), 0.99))


def cmd_pick(args) -> int:
    """Pick particles (``deeppicker pick``); returns the exit code."""
    from napari_deeppicker._cli_batch import pick_records
    from napari_deeppicker.core._files import file_stem
    from napari_deeppicker.core.batch import resolve_inputs
    from napari_deeppicker.core.model import load_model, save_model
    from napari_deeppicker.core.picking import PickConfig

    started = time.perf_counter()
    items = resolve_inputs(args.inputs)
    paths = [item.path for item in items]
    stems: dict[str, Path] = {}
    for path in paths:
        other = stems.setdefault(file_stem(path), path)
        if other != path:
            raise DeepPickerError(
                f"{other} and {path} would both be written as {file_stem(path)}"
                f"{SUFFIXES[args.format]}: pick them into different --out folders")
    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    polarity, votes = resolve_polarity(args, paths)
    if polarity == "bright":
        model.preprocess = replace(model.preprocess, invert=not model.preprocess.invert)
    config = PickConfig(threshold=args.threshold, top_n=args.top, step=args.step, edge=args.edge,
                        null_check=args.null_check)
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    summary = {"software_version": __version__, "model": str(args.model),
               "model_path": model.metadata.get("path"), "box": args.box,
               "threshold": args.threshold, "top": args.top, "step": args.step, "edge": args.edge,
               "null_check": args.null_check,
               "invert": polarity == "bright", "polarity": polarity,
               "polarity_requested": "bright" if args.invert else args.polarity,
               "polarity_votes": votes, "format": args.format, "device": str(device),
               "self_train": None,
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    picks = None
    if args.self_train:
        try:
            st_config = self_train_config(model, paths, args.box, config)
            model, picks = self_train(model, paths, args.box, st_config, args, device)
            if config.threshold == "auto":  # re-pick: the fine-tuned model has its own scale
                picks = None
        except KeyboardInterrupt:
            note("interrupted during self-training: no picks written")
            return EXIT_INTERRUPTED
        summary["self_train"] = {"iterations": args.self_train, "top": args.self_train_top,
                                 "epochs": args.self_train_epochs, "saved_model": args.save_model}
        if args.save_model:
            save_model(model, args.save_model)
            note(f"saved the self-trained model to {args.save_model}")
    records: list[dict] = []
    interrupted = False
    try:
        if picks is None:  # whole datasets: streaming, resumable, optionally on a Dask cluster
            records_in = pick_records(args, model, items, config, device, outdir, summary)
        else:
            records_in = pick_files(model, paths, args.box, config, outdir, fmt=args.format,
                                    scores=args.scores, device=device, picks=picks)
        for record in records_in:
            records.append(record)
    except KeyboardInterrupt:
        interrupted = True
    done = [r for r in records if "error" not in r]
    failed = [r for r in records if "error" in r]
    counts = {file_stem(r["micrograph"]): r["n_picks"] for r in done}
    summary.update(micrographs=records, counts=counts,
                   n_picks=sum(r["n_picks"] for r in done), n_failed=len(failed),
                   interrupted=interrupted, seconds=round(time.perf_counter() - started, 3))
    free = [Path(r["micrograph"]).name for r in done if r.get("particle_free")]
    summary["n_particle_free"] = len(free)
    write_json(outdir / SUMMARY_NAME, summary)
    note(f"{summary['n_picks']} picks in {len(done)} of {len(paths)} micrographs "
         f"written to {outdir}")
    if free:
        note(f"{len(free)} micrographs look particle-free (nothing scores above their noise "
             f"null; no pick kept; --no-null-check keeps them): " + ", ".join(free[:10])
             + (" ..." if len(free) > 10 else ""))
    if interrupted:
        note(f"interrupted after {len(records)} of {len(paths)} micrographs; "
             "the files written are complete")
        return EXIT_INTERRUPTED
    if failed:
        error(f"{len(failed)} of {len(paths)} micrographs could not be picked: "
              + ", ".join(Path(r["micrograph"]).name for r in failed))
        return EXIT_ERROR
    return 0
