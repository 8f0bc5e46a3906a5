"""Helpers shared by the benchmark scripts: provenance, timed commands, the real sets, Topaz.

Every benchmark records where and how it ran (:func:`provenance`): date, machine (``nproc``, CPU
model), command line, load average (the machine may be shared: timings depend on it) and the
software versions, so that BENCHMARKS.md can cite the numbers with their conditions.

Topaz (the peer) lives in its own virtual environment, never in the project's: it is run as
``<topaz python> -m topaz.commands.<cmd>``. The interpreter is ``--topaz-python``, else the
``TOPAZ_PYTHON`` environment variable, else ``/work/topaz-venv/bin/python`` (where
``../shared/peers/install_topaz.sh /work/topaz-venv`` puts it).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"
DEFAULT_TOPAZ_PYTHON = "/work/topaz-venv/bin/python"
TOPAZ_MODEL = "resnet16_u64"
log = logging.getLogger("benchmark")


@dataclass(frozen=True)
class RealSet:
    """One real data set: folder under ``REAL``, evaluation box, Topaz downsampling factor."""

    key: str
    folder: str
    box: int
    topaz_scale: int

    @property
    def topaz_radius(self) -> int:
        """Topaz extraction radius in downsampled pixels: about 0.4 x box / scale."""
        return max(1, int(round(0.4 * self.box / self.topaz_scale)))

    def micrographs(self) -> list[Path]:
        """The micrograph files, sorted by name."""
        return sorted((REAL / self.folder / "micrographs").glob("*.mrc"))

    def references(self) -> dict:
        """Expert coordinates by micrograph stem (DataFrames with ``x``, ``y``)."""
        from napari_deeppicker.core.io import read_coordinates_by_micrograph

        return read_coordinates_by_micrograph(REAL / self.folder / "coords")


SETS = {
    "betagal": RealSet("betagal", "EMPIAR-10017-betagal", 32, 2),
    "ribosome": RealSet("ribosome", "EMPIAR-10028-ribosome", 64, 4),
}


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine may be shared)."""
    return [round(v, 2) for v in os.getloadavg()]


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return out.stdout.strip() + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def provenance() -> dict:
    """Date, machine, command line, load average and versions of this run (JSON-able)."""
    import torch

    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    except (OSError, ValueError, subprocess.CalledProcessError):
        nproc = os.cpu_count()
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": {"nproc": nproc, "cpu_model": cpu_model(), "platform": platform.platform(),
                    "gpu": torch.cuda.is_available()},
        "load_average_start": loadavg(),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "torch_threads": torch.get_num_threads(), "numpy": np.__version__},
        "git_commit": _git_commit(),
    }


def model_identity(model: str) -> dict:
    """Which model file was used: path, SHA-256 and the training date from its metadata."""
    import hashlib

    from napari_deeppicker.core.model import BUILTIN_MODELS, builtin_model_path, load_model

    path = builtin_model_path(model) if model in BUILTIN_MODELS else Path(model)
    if not path.is_file():
        return {"name": model, "path": str(path), "missing": True}
    meta = load_model(str(path)).metadata
    training = meta.get("training", {}) if isinstance(meta.get("training"), dict) else {}
    return {"name": model, "path": str(path),
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "trained": training.get("date"), "general_recipe": (meta.get("general") or {}).get("recipe", {}).get("name")
            if isinstance(meta.get("general"), dict) else None}


def snapshot_model(model: str, workdir: Path) -> tuple[str, dict]:
    """Freeze the model for one benchmark run: a built-in name is copied to ``workdir``.

    The shipped model may be retrained while a long benchmark runs; every command of the run
    then uses the copy, so all its numbers describe one model (identified by its SHA-256).

    Returns
    -------
    path : str
        The model argument to pass to ``deeppicker`` (the copy, or ``model`` unchanged).
    identity : dict
        :func:`model_identity` of the model used.
    """
    import shutil

    from napari_deeppicker.core.model import BUILTIN_MODELS, builtin_model_path

    if model not in BUILTIN_MODELS:
        return model, model_identity(model)
    identity = model_identity(model)
    workdir.mkdir(parents=True, exist_ok=True)
    copy = workdir / f"{model}_{identity['sha256'][:12]}.safetensors"
    shutil.copyfile(builtin_model_path(model), copy)
    identity = {**model_identity(str(copy)), "name": model, "snapshot_of": identity["path"]}
    log.info("using a snapshot of the %r model: %s", model, copy)
    return str(copy), identity


def display_name(model: str) -> str:
    """Short model name for labels: a built-in name, or the file stem (snapshot suffix removed)."""
    stem = Path(model).stem if model.endswith(".safetensors") else model
    return re.sub(r"_[0-9a-f]{12}$", "", stem)


def parse_time_v(stderr: str) -> dict:
    """Wall time, CPU time (user + system, s) and peak resident set size (MB) from ``time -v``.

    On a shared machine the wall time grows with the load; the CPU time much less so.
    """
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if wall is None or rss is None:
        raise ValueError("no /usr/bin/time -v report in the output:\n" + stderr[-2000:])
    seconds = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    cpu = sum(float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", stderr))
    return {"wall_s": round(seconds, 3), "cpu_s": round(cpu, 2),
            "peak_rss_mb": round(int(rss.group(1)) / 1024, 1)}


def short_command(cmd) -> str:
    """The command line, a run of ``.mrc`` files of one folder shown as ``folder/[N .mrc files]``."""
    out, run = [], []

    def flush():
        if len(run) > 2:
            out.append(f"{Path(run[0]).parent}/[{len(run)} .mrc files]")
        else:
            out.extend(run)
        run.clear()

    for arg in (str(c) for c in cmd):
        if arg.endswith(".mrc") and (not run or Path(arg).parent == Path(run[0]).parent):
            run.append(arg)
            continue
        flush()
        if arg.endswith(".mrc"):
            run.append(arg)
        else:
            out.append(shlex.quote(arg))
    flush()
    return " ".join(out)


def run_timed(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command under ``/usr/bin/time -v``; return wall time, peak RSS and load average.

    Raises ``subprocess.CalledProcessError`` (with the command's stderr logged) on failure.
    """
    load = loadavg()
    full = ["/usr/bin/time", "-v", *[str(c) for c in cmd]]
    log.debug("running %s", " ".join(shlex.quote(c) for c in full))
    proc = subprocess.run(full, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        log.error("command failed (%d): %s\n%s", proc.returncode, " ".join(full), proc.stderr[-3000:])
        raise subprocess.CalledProcessError(proc.returncode, full, proc.stdout, proc.stderr)
    return {**parse_time_v(proc.stderr), "load_average": load, "command": short_command(cmd)}


def deeppicker_cmd() -> list[str]:
    """The ``deeppicker`` command line of this interpreter's installation."""
    return [sys.executable, "-m", "napari_deeppicker"]


def topaz_python(arg: str | None = None) -> str:
    """The Topaz interpreter: the argument, else ``$TOPAZ_PYTHON``, else the default venv."""
    path = arg or os.environ.get("TOPAZ_PYTHON") or DEFAULT_TOPAZ_PYTHON
    if not Path(path).is_file():
        raise SystemExit(f"Topaz interpreter {path} not found: run "
                         "`bash ../shared/peers/install_topaz.sh /work/topaz-venv` or pass --topaz-python")
    return path


def topaz_commands(python: str, mics: list[Path], workdir: Path, rset: RealSet, *,
                   threshold: float = -6.0) -> tuple[list[str], list[str], Path]:
    """Topaz preprocess and extract command lines for some micrographs of one set.

    Preprocessing downsamples by ``rset.topaz_scale`` (Fourier cropping, then Topaz's GMM
    normalisation) into ``workdir/preprocessed``; extraction runs the shipped general model
    ``resnet16_u64`` on the CPU (``-d -1``) with radius ``rset.topaz_radius`` and writes the
    table ``workdir/topaz_picks.txt``, whose coordinates ``-x`` scales back to the original
    micrograph pixels (Fourier cropping keeps pixel 0 at pixel 0, so ``x * scale`` is exact).
    ``threshold`` is Topaz's log-likelihood-ratio cut-off (its default, -6, keeps almost all).

    Returns
    -------
    preprocess, extract : list of str
        The two command lines.
    table : pathlib.Path
        Where the extract command writes its picks.
    """
    pre = workdir / "preprocessed"
    pre.mkdir(parents=True, exist_ok=True)
    table = workdir / "topaz_picks.txt"
    preprocess = [python, "-m", "topaz.commands.preprocess", "-s", str(rset.topaz_scale), "-d", "-1",
                  "-o", str(pre), *[str(m) for m in mics]]
    extract = [python, "-m", "topaz.commands.extract", "-m", TOPAZ_MODEL, "-d", "-1",
               "-r", str(rset.topaz_radius), "-x", str(rset.topaz_scale), "-t", str(threshold),
               "-o", str(table), *[str(pre / m.name) for m in mics]]
    return preprocess, extract, table


def read_topaz_picks(table: Path, stems) -> dict:
    """Topaz picks by micrograph stem (``score`` is Topaz's log-likelihood ratio); empty if none."""
    import pandas as pd

    from napari_deeppicker.core.io import read_coordinates

    empty = pd.DataFrame({"x": [], "y": [], "score": []})
    if not table.is_file() or table.stat().st_size == 0:
        return {s: empty for s in stems}
    df = read_coordinates(table, fmt="topaz")
    return {s: df.loc[df["micrograph"] == s, ["x", "y", "score"]].reset_index(drop=True)
            if (df["micrograph"] == s).any() else empty for s in stems}


def write_json(path: Path, obj) -> Path:
    """Write JSON (NaN as null) atomically and log where."""
    from napari_deeppicker.core.io import atomic_write

    def plain(v):
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v) if np.isfinite(v) else None
        if isinstance(v, Path):
            return str(v)
        return v

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as fh:
        json.dump(plain(obj), fh, indent=1)
    log.info("wrote %s", path)
    return path


def setup_logging(verbose: bool = False) -> None:
    """Log benchmark progress to stderr with timestamps."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("napari_deeppicker").setLevel(logging.WARNING)
