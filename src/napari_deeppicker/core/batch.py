"""Batch picking of whole datasets: streaming, read-ahead, GPU batches, resumable outputs.

:class:`BatchPicker` picks a list of micrographs (see :func:`resolve_inputs`) with constant
memory: a background thread reads the next micrographs while the network scores the current
one, and on a GPU several micrographs of the same shape go through the network together. Every
micrograph's coordinates file is written atomically as soon as it is done; it is the record that
the micrograph is finished, so an interrupted run resumes where it stopped. The manifest
(``pick_summary.json``) records the settings; a folder holding picks made with other settings is
refused instead of being mixed. When the whole list is done, the combined files are written:
every pick in one STAR file and a RELION 4/5 coordinate-file list (``autopick.star``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from . import picking
from ._batch_compute import pick_group, read_checked
from ._batch_inputs import MicrographItem, find_project_dir, resolve_inputs
from ._batch_outputs import (
    COORDINATE_LIST_NAME,
    MANIFEST_NAME,
    SettingsMismatchError,
    append_combined,
    batch_settings,
    check_settings,
    coordinate_rows,
    model_digest,
    read_manifest,
    relative_name,
    write_combined,
    write_manifest,
)
from ._read_ahead import ReadAhead
from .errors import DeepPickerError
from .nullcheck import is_particle_free

__all__ = [
    "COORDINATE_LIST_NAME", "DEFAULT_COMBINED", "MANIFEST_NAME", "BatchConfig", "BatchPicker",
    "BatchProgress", "MicrographItem", "PickResult", "SettingsMismatchError", "append_combined",
    "batch_settings", "check_settings", "coordinate_rows", "find_project_dir", "model_digest",
    "read_manifest", "relative_name", "resolve_inputs", "write_combined", "write_manifest",
]

logger = logging.getLogger(__name__)

DEFAULT_COMBINED = Path("combined") / "picks.star"
SUFFIXES = {"star": ".star", "box": ".box", "csv": ".csv"}


@dataclass
class BatchConfig:
    """How a batch is run and written (the picking itself is a :class:`PickConfig`).

    Parameters
    ----------
    fmt : {"star", "box", "csv"}
        Format of the per-micrograph files (``<stem>.star`` etc. in the output folder).
    resume : bool
        Skip micrographs whose coordinates file exists (the settings must match).
    overwrite : bool
        Re-pick everything and replace the outputs, whatever settings they were made with.
    batch_size : int
        Micrographs of the same shape scored in one forward pass (use > 1 on a GPU).
    read_ahead : int
        Micrographs read in advance by the reader thread.
    combined : path or None
        Combined STAR file with every pick, relative to the output folder unless absolute
        (None: none). The RELION coordinate-file list ``autopick.star`` is written next to it
        when ``fmt`` is ``"star"``.
    """

    fmt: str = "star"
    resume: bool = True
    overwrite: bool = False
    batch_size: int = 1
    read_ahead: int = 1
    combined: str | os.PathLike | None = DEFAULT_COMBINED


@dataclass
class PickResult:
    """What picking one micrograph produced."""

    picks: pd.DataFrame
    score_map: picking.ScoreMap | None
    shape: tuple[int, int]
    pixel_size: float | None


@dataclass
class BatchProgress:
    """Progress of a batch, reported once per micrograph.

    ``status`` is ``"picked"``, ``"skipped"`` (finished by an earlier run) or ``"failed"``
    (``error`` says why); ``done`` counts the micrographs handled so far, out of ``total``.
    """

    done: int
    total: int
    item: MicrographItem
    status: str
    n_picks: int | None = None
    output: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    particle_free: bool = False


class BatchPicker:
    """Pick a list of micrographs into an output folder, resumably.

    Parameters
    ----------
    model : PickerModel
        The network.
    items : sequence of MicrographItem
        What to pick (from :func:`resolve_inputs`).
    box : int
        Particle box in micrograph pixels.
    outdir : path
        Output folder (created if needed).
    pick_config : PickConfig, optional
        Picking settings.
    config : BatchConfig, optional
        Batch settings.
    layout : callable, optional
        ``layout(item) -> Path`` of the item's coordinates file; default
        ``outdir / (stem + suffix)``.
    on_picked : callable, optional
        ``on_picked(item, result)`` called before a micrograph's coordinates file is written
        (to write extra files that must exist when the micrograph counts as finished).
    device : torch.device or str, optional
        Compute device (default: the model's).
    should_stop : callable, optional
        Polled between micrographs; True stops the run (the combined files are not written).
    manifest : bool
        Check the settings against the folder's manifest and record them there (turn off only
        when the caller does it, as :class:`~napari_deeppicker.core.watch.FolderWatcher`).

    Raises
    ------
    DeepPickerError
        If two micrographs would be written to the same file.
    """

    def __init__(self, model, items: Sequence[MicrographItem], box: int, outdir, *,
                 pick_config: picking.PickConfig | None = None, config: BatchConfig | None = None,
                 layout: Callable[[MicrographItem], Path] | None = None,
                 on_picked: Callable[[MicrographItem, PickResult], None] | None = None,
                 device=None, should_stop: Callable[[], bool] | None = None,
                 manifest: bool = True) -> None:
        self.model, self.items, self.box = model, list(items), int(box)
        self.outdir = Path(outdir)
        self.pick_config = pick_config or picking.PickConfig()
        self.config = config or BatchConfig()
        if self.config.fmt not in SUFFIXES:
            raise DeepPickerError(f"unknown coordinates format {self.config.fmt!r}")
        suffix = SUFFIXES[self.config.fmt]
        self.layout = layout or (lambda item: self.outdir / f"{item.stem}{suffix}")
        self.on_picked, self.device = on_picked, device
        self.should_stop = should_stop or (lambda: False)
        self.manifest = manifest
        self.outputs = [Path(self.layout(item)) for item in self.items]
        seen: dict[Path, MicrographItem] = {}
        for item, out in zip(self.items, self.outputs):
            other = seen.setdefault(out.resolve(), item)
            if other is not item:
                raise DeepPickerError(f"{other.path} and {item.path} would both be written as "
                                      f"{out}: pick them into different output folders")
        self.counts = {"picked": 0, "skipped": 0, "failed": 0}
        self.n_picks = 0
        self.completed = False

    @property
    def settings(self) -> dict:
        """What the picks depend on; recorded in the manifest and compared when resuming."""
        return batch_settings(self.model, self.box, self.pick_config, self.config.fmt)

    @property
    def combined_paths(self) -> tuple[Path | None, Path | None]:
        """(combined picks STAR, RELION coordinate-file list); None where not written."""
        if self.config.combined is None:
            return None, None
        picks_path = self.outdir / Path(self.config.combined)
        listing = picks_path.parent / COORDINATE_LIST_NAME if self.config.fmt == "star" else None
        return picks_path, listing

    def run(self) -> Iterator[BatchProgress]:
        """Pick every micrograph not finished yet; yield one :class:`BatchProgress` each.

        Stop iterating (or make ``should_stop`` return True) to interrupt: every file written
        is complete, and a later run with the same settings continues from there.

        Raises
        ------
        SettingsMismatchError
            If the output folder holds picks made with other settings (and not ``overwrite``).
        """
        self.outdir.mkdir(parents=True, exist_ok=True)
        settings = self.settings
        skip = self.config.resume and not self.config.overwrite
        finished = [skip and out.is_file() for out in self.outputs]
        if self.manifest:
            if not self.config.overwrite:
                check_settings(self.outdir, settings, any(out.is_file() for out in self.outputs))
            write_manifest(self.outdir, settings, status="running")
        total, done = len(self.items), 0
        todo = []
        for item, out, is_done in zip(self.items, self.outputs, finished):
            if not is_done:
                todo.append((item, out))
                continue
            done += 1
            self.counts["skipped"] += 1
            n = len(coordinate_rows(out, self.box))
            self.n_picks += n
            yield BatchProgress(done, total, item, "skipped", n, out)
        stream = self._compute(todo)
        try:
            for k, result, error, seconds in stream:
                item, out = todo[k]
                done += 1
                if error is not None:
                    logger.warning("%s", error)
                    self.counts["failed"] += 1
                    yield BatchProgress(done, total, item, "failed", error=str(error),
                                        seconds=seconds)
                else:
                    self._commit(item, out, result)
                    yield BatchProgress(done, total, item, "picked", len(result.picks), out,
                                        seconds=seconds,
                                        particle_free=is_particle_free(result.picks))
                if self.should_stop():
                    logger.info("stopped after %d of %d micrographs", done, total)
                    return
        finally:
            stream.close()  # stops the reader thread, or cancels the cluster's tasks
        self.write_combined()
        self.completed = True
        if self.manifest:
            write_manifest(self.outdir, settings, status="complete", counts=self.counts,
                           n_picks=self.n_picks)

    def _compute(self, todo) -> Iterator[tuple[int, PickResult | None, Exception | None, float]]:
        """Pick ``todo`` in process with a reader thread; yield (index, result, error, seconds).

        Subclasses (the Dask runner) may yield in any order.
        """
        size = max(1, int(self.config.batch_size))
        reader = ReadAhead([item.path for item, _ in todo], lambda p: read_checked(p, self.box),
                           depth=max(self.config.read_ahead, size))
        with reader:
            group: list = []
            for k, (_, mic, error) in enumerate(reader):
                if error is not None:
                    yield from self._flush(group)
                    group = []
                    if not isinstance(error, (DeepPickerError, OSError)):
                        raise error
                    yield k, None, error, 0.0
                    continue
                if group and (mic.data.shape != group[0][1].data.shape or len(group) >= size):
                    yield from self._flush(group)
                    group = []
                group.append((k, mic))
                if size == 1:
                    yield from self._flush(group)
                    group = []
            yield from self._flush(group)

    def _flush(self, group: list) -> Iterator[tuple]:
        """Pick a group of read micrographs (one forward pass when > 1); same yields as above."""
        if len(group) > 1:
            start = time.perf_counter()
            try:
                found = pick_group(self.model, [m for _, m in group], self.box, self.pick_config,
                                    self.device)
            except DeepPickerError:
                found = None  # one bad micrograph: redo them one by one to know which
            if found is not None:
                share = (time.perf_counter() - start) / len(group)
                for (k, mic), (picks, score_map) in zip(group, found):
                    result = PickResult(picks, score_map, mic.data.shape, mic.pixel_size)
                    yield k, result, None, share
                return
        for k, mic in group:
            start = time.perf_counter()
            try:
                picks, score_map = picking.pick_micrograph(self.model, mic.data, self.box,
                                                           self.pick_config, self.device)
            except DeepPickerError as err:
                yield k, None, err, time.perf_counter() - start
                continue
            result = PickResult(picks, score_map, mic.data.shape, mic.pixel_size)
            yield k, result, None, time.perf_counter() - start

    def _commit(self, item: MicrographItem, out: Path, result: PickResult) -> None:
        """Write one micrograph's outputs; the coordinates file last (it marks it finished)."""
        from .io import write_coordinates

        if self.on_picked is not None:
            self.on_picked(item, result)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_coordinates(result.picks[["x", "y", "score"]], out, box=self.box, fmt=self.config.fmt)
        self.counts["picked"] += 1
        self.n_picks += len(result.picks)

    def write_combined(self) -> None:
        """(Re)write the combined files from every finished micrograph, in input order."""
        picks_path, listing = self.combined_paths
        if picks_path is None:
            return
        picks_path.parent.mkdir(parents=True, exist_ok=True)
        entries = ((item.name, coordinate_rows(out, self.box), relative_name(out, item.root))
                   for item, out in zip(self.items, self.outputs) if out.is_file())
        write_combined(picks_path, listing, entries)
