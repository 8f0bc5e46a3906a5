"""Live picking during data collection: pick each micrograph as it appears in a folder.

:class:`FolderWatcher` polls a folder (no inotify: it works on network file systems). A file is
picked once it is complete: its size and modification time did not change between two polls,
and for an uncompressed MRC file the header parses and the file holds all the data the header
announces. Each micrograph gets its coordinates file (written atomically, as in batch picking)
and is appended to the combined files, which are rewritten atomically. The coordinates files are
the memory of what is done: after a restart nothing is picked twice, and the combined files are
rebuilt from them once, so they match whatever happened before.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from . import picking
from ._batch_outputs import (
    append_combined,
    check_settings,
    coordinate_rows,
    relative_name,
    write_combined,
    write_manifest,
)
from .batch import BatchConfig, BatchPicker, BatchProgress, MicrographItem, batch_settings
from .errors import MicrographError

logger = logging.getLogger(__name__)

DEFAULT_PATTERNS = ("*.mrc", "*.mrc.gz")
_NAP_S = 0.05


def file_complete(path: Path) -> bool:
    """Whether an MRC file looks completely written (header and announced data length).

    Compressed files cannot be checked without decompressing them; they count as complete
    (the stable-size test and the full read when picking guard them).
    """
    from ._mrc import _check_layout, _compression, _read_header

    try:
        compression = _compression(path)
        if compression is not None:
            return True
        header, _, _ = _read_header(path, None)
        _check_layout(path, header, None)
    except (ValueError, OSError):
        return False
    return True


def _state(path: Path) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, None when it vanished."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


class FolderWatcher:
    """Pick the micrographs of a folder as they appear.

    Parameters
    ----------
    model : PickerModel
        The network.
    folder : path
        The folder to watch (not recursive).
    box : int
        Particle box in micrograph pixels.
    outdir : path
        Output folder, laid out as for :class:`~napari_deeppicker.core.batch.BatchPicker`.
    pick_config : PickConfig, optional
        Picking settings.
    config : BatchConfig, optional
        Format, combined file, ``overwrite`` (re-pick what was picked before).
    patterns : sequence of str
        File name patterns to pick (hidden files, names starting with ``.``, are ignored).
    interval : float
        Seconds between polls.
    device : torch.device or str, optional
        Compute device.
    on_picked : callable, optional
        As for :class:`BatchPicker`.
    """

    def __init__(self, model, folder, box: int, outdir, *,
                 pick_config: picking.PickConfig | None = None, config: BatchConfig | None = None,
                 patterns: Sequence[str] = DEFAULT_PATTERNS, interval: float = 5.0, device=None,
                 on_picked=None) -> None:
        self.model, self.folder, self.box = model, Path(folder), int(box)
        self.outdir = Path(outdir)
        self.pick_config = pick_config or picking.PickConfig()
        self.config = config or BatchConfig()
        self.patterns, self.interval = tuple(patterns), float(interval)
        self.device, self.on_picked = device, on_picked
        self.counts = {"picked": 0, "failed": 0, "skipped": 0}
        self.n_picks = 0
        if not self.folder.is_dir():
            raise MicrographError(f"{self.folder}: no such folder to watch")

    def _picker(self, items: list[MicrographItem]) -> BatchPicker:
        config = replace(self.config, combined=None, resume=True, overwrite=False)
        return BatchPicker(self.model, items, self.box, self.outdir, pick_config=self.pick_config,
                           config=config, device=self.device, on_picked=self.on_picked,
                           manifest=False)

    def _scan(self) -> list[Path]:
        found: dict[Path, None] = {}
        for pattern in self.patterns:
            for path in sorted(self.folder.glob(pattern)):
                if path.is_file() and not path.name.startswith("."):
                    found.setdefault(path, None)
        return sorted(found)

    def _item(self, path: Path) -> MicrographItem:
        return MicrographItem(path, os.fspath(path), Path.cwd())

    def _start(self) -> set[Path]:
        """Check settings, record them, rebuild the combined files; return what is done."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        present = [self._item(p) for p in self._scan()]
        unique: dict[str, MicrographItem] = {}
        for item in present:
            unique.setdefault(item.stem, item)
        probe = self._picker(list(unique.values()))
        outputs = dict(zip(probe.items, probe.outputs))
        if self.config.overwrite:
            for out in outputs.values():
                out.unlink(missing_ok=True)
        settings = batch_settings(self.model, self.box, self.pick_config, self.config.fmt)
        if not self.config.overwrite:
            check_settings(self.outdir, settings, any(out.is_file() for out in outputs.values()))
        write_manifest(self.outdir, settings, status="watching")
        done = {item.path for item, out in outputs.items() if out.is_file()}
        picks_path, listing = BatchPicker(self.model, [], self.box, self.outdir,
                                          config=self.config).combined_paths
        self._combined = (picks_path, listing)
        if picks_path is not None:
            picks_path.parent.mkdir(parents=True, exist_ok=True)
            write_combined(picks_path, listing, (
                (item.name, coordinate_rows(out, self.box), relative_name(out, item.root))
                for item, out in outputs.items() if out.is_file()))
        self.counts["skipped"] = len(done)
        return done

    def run(self, *, once: bool = False, timeout: float | None = None,
            should_stop: Callable[[], bool] | None = None) -> Iterator[BatchProgress]:
        """Poll and pick until stopped; yield one :class:`BatchProgress` per new micrograph.

        Parameters
        ----------
        once : bool
            Pick what is in the folder (waiting for files still being written) and return.
        timeout : float, optional
            Return after this many seconds.
        should_stop : callable, optional
            Polled between micrographs and while waiting; True returns.
        """
        should_stop = should_stop or (lambda: False)
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        done = self._start()
        stems = {self._item(p).stem: p for p in done}
        seen: dict[Path, tuple[tuple[int, int], float]] = {}  # state, since when
        failed: dict[Path, tuple[int, int]] = {}
        n_seen = len(done)
        while True:
            ready, pending = [], 0
            for path in self._scan():
                if path in done:
                    continue
                state = _state(path)
                if state is None:
                    continue
                if failed.get(path) == state:
                    continue
                other = stems.setdefault(self._item(path).stem, path)
                if other != path:
                    logger.warning("ignoring %s: %s has the same stem", path, other)
                    failed[path] = state
                    continue
                previous, since = seen.get(path, (None, 0.0))
                now = time.monotonic()
                stable = previous == state and now - since >= self.interval
                if stable and state[0] > 0 and file_complete(path):
                    ready.append(self._item(path))
                else:
                    if previous != state:
                        seen[path] = (state, now)
                    pending += 1
            if ready:
                picker = self._picker(ready)
                for progress in picker.run():
                    n_seen += 1
                    path = progress.item.path
                    seen.pop(path, None)
                    if progress.status == "failed":
                        failed[path] = _state(path)
                        self.counts["failed"] += 1
                    else:
                        done.add(path)
                        rows = coordinate_rows(progress.output, self.box)
                        append_combined(*self._combined, progress.item.name, rows,
                                        relative_name(progress.output, progress.item.root))
                        self.counts["picked"] += progress.status == "picked"
                        self.n_picks += len(rows)
                    yield replace(progress, done=n_seen, total=n_seen + pending)
                    if should_stop():
                        return
                continue  # poll again at once: more files may have become ready meanwhile
            if once and pending == 0:
                return
            if not self._sleep(deadline, should_stop):
                return

    def _sleep(self, deadline: float | None, should_stop: Callable[[], bool]) -> bool:
        """Wait one interval; False when the deadline passed or a stop was asked."""
        end = time.monotonic() + self.interval
        while True:
            now = time.monotonic()
            if should_stop() or (deadline is not None and now >= deadline):
                return False
            if now >= end:
                return True
            time.sleep(min(_NAP_S, end - now))
