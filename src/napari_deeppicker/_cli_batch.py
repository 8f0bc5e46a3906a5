"""Whole datasets from the command line: ``deeppicker pick`` on many micrographs, ``watch``.

``pick`` streams its inputs through :class:`~napari_deeppicker.core.batch.BatchPicker` (or
:class:`~napari_deeppicker.core.distributed.DaskBatchPicker` with ``--scheduler``); ``watch``
runs :class:`~napari_deeppicker.core.watch.FolderWatcher`. Dask is imported only when asked for.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_deeppicker import __version__
from napari_deeppicker._cli_common import (
    EXIT_ERROR,
    error,
    note,
    progress_bar,
    resolve_device,
)

logger = logging.getLogger(__name__)

_DEVICE_HELP = "compute device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
GPU_BATCH = 4


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid int") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is out of range (must be >= 1)")
    return value


def add_batch_arguments(add) -> None:
    """Add the whole-dataset options of ``deeppicker pick`` (``add`` = ``add_argument``)."""
    add("--resume", action=argparse.BooleanOptionalAction, default=True,
        help="skip micrographs whose coordinates file exists; the settings must match those "
             "recorded in DIR/pick_summary.json")
    add("--overwrite", action="store_true",
        help="re-pick everything and replace the outputs, even if made with other settings")
    add("--combined", metavar="FILE",
        help="combined STAR file with every pick (default DIR/combined/picks.star; RELION's "
             "coordinate-file list autopick.star is written next to it); 'none' for neither")
    add("--scheduler", metavar="ADDRESS",
        help="pick on a Dask cluster: local, local:N (N worker processes), a scheduler address "
             "(tcp://host:8786) or a scheduler file (.json); see docs/CLUSTER.md")
    add("--batch-size", type=_positive_int, metavar="N",
        help=f"micrographs of one shape per forward pass (default {GPU_BATCH} on a GPU, 1 else)")


def batch_config(args, device):
    """The :class:`BatchConfig` of the command-line options."""
    from napari_deeppicker.core.batch import DEFAULT_COMBINED, BatchConfig

    combined = getattr(args, "combined", None)
    if combined is None:
        combined = DEFAULT_COMBINED  # inside the output folder
    elif str(combined).lower() == "none":
        combined = None
    else:
        combined = Path(combined).absolute()  # as given: relative to the current folder
    size = getattr(args, "batch_size", None) or (GPU_BATCH if device.type == "cuda" else 1)
    return BatchConfig(fmt=getattr(args, "format", "star"), resume=getattr(args, "resume", True),
                       overwrite=getattr(args, "overwrite", False), batch_size=size,
                       combined=combined)


@contextmanager
def make_picker(model, items, box, outdir, *, pick_config, config, device, scheduler=None,
                worker_device="auto", **kwargs) -> Iterator:
    """A BatchPicker, or a DaskBatchPicker on a cluster that stays open while in use."""
    from napari_deeppicker.core.batch import BatchPicker

    if not scheduler:
        yield BatchPicker(model, items, box, outdir, pick_config=pick_config, config=config,
                          device=device, **kwargs)
        return
    from napari_deeppicker.core.distributed import DaskBatchPicker, dask_client

    note(f"connecting to the Dask scheduler {scheduler}")
    with dask_client(scheduler) as client:
        workers = client.nthreads()
        note(f"{len(workers)} Dask workers, {sum(workers.values())} threads")
        yield DaskBatchPicker(model, items, box, outdir, pick_config=pick_config, config=config,
                              device=device, client=client, worker_device=worker_device, **kwargs)


def _score_writer(outdir: Path, box: int, model_name: str):
    """``on_picked`` callback writing ``<stem>_scores.mrc``/``.json`` (``pick --scores``)."""
    from napari_deeppicker._cli_pick import write_score_map
    from napari_deeppicker.core.io import Micrograph

    def write(item, result) -> None:
        # Only the shape of the image is used; a zero-stride view stands for its pixels.
        stand_in = Micrograph(np.broadcast_to(np.float32(0), result.shape), item.path,
                              result.pixel_size)
        write_score_map(result.score_map, stand_in, outdir, box, model_name)

    return write


def pick_records(args, model, items, config, device, outdir: Path, summary: dict) -> Iterator[dict]:
    """Pick ``items`` (``deeppicker pick`` without self-training); yield one record each.

    Records are those of the summary: ``micrograph``, ``n_picks``, ``file``, ``scores``,
    ``seconds`` (and ``skipped`` for micrographs finished by an earlier run), or
    ``micrograph`` and ``error``. ``summary`` gets the run's ``settings`` (the manifest).
    """
    bconfig = batch_config(args, device)
    model_name = str(model.metadata.get("path", "model"))
    on_picked = _score_writer(outdir, args.box, model_name) if args.scores else None
    with make_picker(model, items, args.box, outdir, pick_config=config, config=bconfig,
                     device=device, scheduler=getattr(args, "scheduler", None),
                     worker_device=getattr(args, "device", "auto"), on_picked=on_picked) as picker:
        summary["settings"] = picker.settings
        summary["batch_size"] = bconfig.batch_size
        summary["scheduler"] = getattr(args, "scheduler", None)
        with progress_bar(total=len(items), desc="picking", unit="micrograph") as bar:
            for progress in picker.run():
                yield _record(progress, outdir, args.scores)
                if progress.status == "failed":
                    error(progress.error)
                bar.update()
                if progress.n_picks is not None:
                    bar.set_postfix(picks=progress.n_picks)
        if picker.completed:
            picks_path, listing = picker.combined_paths
            summary["combined"] = None if picks_path is None else str(picks_path)
            summary["coordinate_list"] = None if listing is None else str(listing)
            if picker.counts["skipped"]:
                note(f"{picker.counts['skipped']} micrographs were already picked (resumed)")


def _record(progress, outdir: Path, scores: bool) -> dict:
    path = str(progress.item.path.resolve())
    if progress.status == "failed":
        return {"micrograph": path, "error": progress.error}
    score_file = outdir / f"{progress.item.stem}_scores.mrc" if scores else None
    record = {"micrograph": path, "n_picks": int(progress.n_picks), "file": str(progress.output),
              "scores": None if score_file is None or not score_file.is_file() else str(score_file),
              "seconds": round(progress.seconds, 3)}
    if progress.status == "skipped":
        record["skipped"] = True
    if progress.particle_free:
        record["particle_free"] = True
    return record


# --- deeppicker watch ------------------------------------------------------------------------


def add_watch_arguments(add) -> None:
    """Arguments of ``deeppicker watch`` (``add`` = ``add_argument``)."""
    from napari_deeppicker.cli import FRACTION, NULL_CHECK_HELP, POSITIVE_FLOAT, POSITIVE_INT

    add("folder", metavar="DIR", help="folder the micrographs appear in (not recursive)")
    add("--model", required=True, metavar="MODEL",
        help="model file, or 'general' for the model shipped with the package")
    add("--box", required=True, type=POSITIVE_INT, metavar="PX",
        help="particle box in micrograph pixels")
    add("--out", required=True, metavar="OUT", help="output folder (created if needed)")
    add("--threshold", type=FRACTION, default=0.5, metavar="T",
        help="keep picks scoring above this (0-1)")
    add("--top", type=POSITIVE_INT, metavar="N", help="keep at most N picks per micrograph")
    add("--step", type=int, choices=(4, 2, 1), default=4,
        help="score-map step in pixels of the box rescaled to 64 px")
    add("--edge", type=float, default=0.5, metavar="FRACTION",
        help="picks keep this fraction of the box from the image border")
    add("--no-null-check", dest="null_check", action="store_false", help=NULL_CHECK_HELP)
    add("--invert", action="store_true", help="particles are bright on the background")
    add("--format", choices=("star", "box", "csv"), default="star",
        help="format of the per-micrograph coordinates files")
    add("--combined", metavar="FILE",
        help="combined STAR file with every pick, updated after each micrograph (default "
             "OUT/combined/picks.star, with RELION's autopick.star next to it); 'none'")
    add("--pattern", action="append", metavar="GLOB",
        help="file names to pick (repeatable; default *.mrc and *.mrc.gz)")
    add("--interval", type=POSITIVE_FLOAT, default=5.0, metavar="S",
        help="seconds between polls; a file is picked once its size stayed the same this long")
    add("--once", action="store_true",
        help="pick what is in the folder (waiting for files still being written), then exit")
    add("--timeout", type=POSITIVE_FLOAT, metavar="S", help="stop after S seconds")
    add("--overwrite", action="store_true",
        help="re-pick micrographs picked before, even with other settings")
    add("--device", default="auto", metavar="D", help=_DEVICE_HELP)


def cmd_watch(args) -> int:
    """``deeppicker watch``: pick micrographs as they appear; returns the exit code."""
    from napari_deeppicker.core.batch import batch_settings, write_manifest
    from napari_deeppicker.core.model import load_model
    from napari_deeppicker.core.picking import PickConfig
    from napari_deeppicker.core.watch import DEFAULT_PATTERNS, FolderWatcher

    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    if args.invert:
        model.preprocess = replace(model.preprocess, invert=not model.preprocess.invert)
    config = PickConfig(threshold=args.threshold, top_n=args.top, step=args.step, edge=args.edge,
                        null_check=args.null_check)
    outdir = Path(args.out)
    bconfig = replace(batch_config(args, device), batch_size=1)
    watcher = FolderWatcher(model, args.folder, args.box, outdir, pick_config=config,
                            config=bconfig, patterns=args.pattern or DEFAULT_PATTERNS,
                            interval=args.interval, device=device)
    started = time.perf_counter()
    note(f"watching {args.folder} every {args.interval:g} s"
         + ("" if args.once else " (Ctrl-C to stop)"))
    stopped_by_user = False
    try:
        for progress in watcher.run(once=args.once, timeout=args.timeout):
            if progress.status == "failed":
                error(progress.error)
            else:
                note(f"{progress.item.path.name}: {progress.n_picks} picks "
                     f"({progress.seconds:.2f} s)")
    except KeyboardInterrupt:
        stopped_by_user = True
    write_manifest(outdir, batch_settings(model, args.box, config, args.format),
                   software_version=__version__, command="watch", folder=str(args.folder),
                   model=str(args.model), counts=watcher.counts, n_picks=watcher.n_picks,
                   seconds=round(time.perf_counter() - started, 3), stopped_by_user=stopped_by_user,
                   date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    counts = watcher.counts
    note(f"picked {counts['picked']} new micrographs ({counts['skipped']} done before, "
         f"{counts['failed']} failed); outputs in {outdir}")
    return EXIT_ERROR if counts["failed"] else 0
