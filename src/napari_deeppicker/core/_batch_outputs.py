"""Outputs of batch picking: the settings manifest and the combined STAR files.

Import these through :mod:`napari_deeppicker.core.batch`. The combined files are written as text
here (not through ``starfile``) so that tens of thousands of micrographs stream through in
constant memory: the coordinates rows of each per-micrograph STAR file are copied verbatim,
which keeps every value exactly as written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path

from ._coords import read_coordinates
from ._coords_formats import format_float
from ._files import atomic_path, atomic_write
from .errors import CoordinatesError, DeepPickerError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "pick_summary.json"
COORDINATE_LIST_NAME = "autopick.star"
NO_SCORE = "-999"  # what RELION records as the figure of merit of picks without one
_PICK_LABELS = ["_rlnCoordinateX", "_rlnCoordinateY", "_rlnAutopickFigureOfMerit"]
_PICKS_HEADER = ("# version 30001\n\ndata_particles\n\nloop_\n_rlnMicrographName #1\n"
                 "_rlnCoordinateX #2\n_rlnCoordinateY #3\n_rlnAutopickFigureOfMerit #4\n")
_LIST_HEADER = ("# version 30001\n\ndata_coordinate_files\n\nloop_\n_rlnMicrographName #1\n"
                "_rlnMicrographCoordinates #2\n")


class SettingsMismatchError(DeepPickerError):
    """An output folder holds picks made with other settings."""


# --- manifest --------------------------------------------------------------------------------


def read_manifest(outdir: Path) -> dict | None:
    """The manifest of an output folder, or None when there is none (or it is unreadable)."""
    path = Path(outdir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.warning("ignoring the unreadable manifest %s (%s)", path, err)
        return None
    return data if isinstance(data, dict) else None


def write_manifest(outdir: Path, settings: dict, **extra) -> Path:
    """Write ``{"settings": settings, **extra}`` as the folder's manifest, atomically."""
    path = Path(outdir) / MANIFEST_NAME
    with atomic_write(path) as fh:
        json.dump({**extra, "settings": settings}, fh, indent=2, default=str)
        fh.write("\n")
    return path


def batch_settings(model, box: int, pick_config, fmt: str) -> dict:
    """The settings picks depend on (model weights, box, picking, preprocessing, format)."""
    return {"model_sha256": model_digest(model), "box": int(box), "pick": pick_config.to_dict(),
            "preprocess": model.preprocess.to_dict(), "format": fmt}


def model_digest(model) -> str:
    """SHA-256 of a model's weights and preprocessing: identifies it whatever its file name."""
    digest = hashlib.sha256()
    for key, value in sorted(model.net.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    digest.update(json.dumps(model.preprocess.to_dict(), sort_keys=True).encode())
    return digest.hexdigest()


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            found.append(f"{prefix}{key} {a!r} -> {b!r}")
    return found


def check_settings(outdir: Path, settings: dict, any_outputs: bool) -> None:
    """Refuse to add picks to a folder whose manifest records other settings.

    Parameters
    ----------
    outdir : pathlib.Path
        Output folder.
    settings : dict
        The settings of this run (JSON-able).
    any_outputs : bool
        Whether the folder already holds per-micrograph outputs of this batch; without a
        manifest such outputs cannot be trusted to match.

    Raises
    ------
    SettingsMismatchError
        Naming the settings that differ (or the missing manifest).
    """
    manifest = read_manifest(outdir)
    recorded = None if manifest is None else manifest.get("settings")
    if recorded is None:
        if any_outputs:
            raise SettingsMismatchError(
                f"{outdir} already holds coordinates files but no {MANIFEST_NAME} with the "
                "settings they were picked with; pick into another folder, or overwrite them")
        return
    recorded = json.loads(json.dumps(recorded))
    current = json.loads(json.dumps(settings, default=str))
    if recorded != current:
        changes = "; ".join(_differences(recorded, current)[:6])
        raise SettingsMismatchError(
            f"{outdir} holds picks made with other settings ({changes}); refusing to mix them: "
            "pick into another folder, or overwrite (re-pick everything)")


# --- combined files --------------------------------------------------------------------------


def _own_star_rows(text: str) -> list[str] | None:
    """Data rows of a single-loop STAR text with our per-micrograph columns, else None."""
    lines = text.splitlines()
    try:
        start = max(i for i, line in enumerate(lines) if line.strip() == "loop_") + 1
    except ValueError:
        return None
    labels, k = [], start
    while k < len(lines) and lines[k].strip().startswith("_"):
        labels.append(lines[k].split()[0])
        k += 1
    if labels != _PICK_LABELS:
        return None
    rows = []
    for line in lines[k:]:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3 or fields[0].startswith(("data_", "loop_", "_")):
            return None
        rows.append(" ".join(fields))
    return rows


def coordinate_rows(path: Path, box: int | None = None) -> list[str]:
    """Rows ``"x y score"`` (text) of a per-micrograph coordinates file.

    STAR files written by this package are copied as text (fast, exact); other files and
    formats are parsed with :func:`~napari_deeppicker.core.io.read_coordinates`.

    Raises
    ------
    CoordinatesError
        If the file cannot be read.
    """
    path = Path(path)
    if path.suffix.lower() == ".star":
        try:
            rows = _own_star_rows(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise CoordinatesError(f"{path}: cannot read it ({err})") from err
        if rows is not None:
            return rows
    df = read_coordinates(path, box=box)
    scores = df["score"] if "score" in df else [None] * len(df)
    return [f"{format_float(x)} {format_float(y)} {NO_SCORE if s is None else format_float(s)}"
            for x, y, s in zip(df["x"], df["y"], scores)]


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when it lies inside it, else absolute (POSIX slashes)."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(Path(os.path.abspath(root))).as_posix()
    except ValueError:
        return absolute.as_posix()


def _check_name(name: str) -> str:
    if not name or any(c.isspace() for c in name):
        raise CoordinatesError(
            f"micrograph name {name!r} is empty or holds spaces: a STAR file cannot store it")
    return name


def write_combined(picks_path: Path | None, list_path: Path | None,
                   entries: Iterable[tuple[str, list[str], str]]) -> None:
    """Write the combined picks STAR and/or the RELION coordinate-file list, atomically.

    Parameters
    ----------
    picks_path : pathlib.Path or None
        Every pick in one ``data_particles`` loop: ``_rlnMicrographName``,
        ``_rlnCoordinateX``, ``_rlnCoordinateY``, ``_rlnAutopickFigureOfMerit``.
    list_path : pathlib.Path or None
        RELION 4/5 ``autopick.star`` layout: a ``data_coordinate_files`` loop with
        ``_rlnMicrographName`` and ``_rlnMicrographCoordinates`` (the per-micrograph file).
    entries : iterable of (micrograph name, rows, coordinates file name)
        Streamed once, in order; ``rows`` as from :func:`coordinate_rows`.
    """
    with _maybe_atomic(picks_path) as picks, _maybe_atomic(list_path) as listing:
        if picks:
            picks.write(_PICKS_HEADER)
        if listing:
            listing.write(_LIST_HEADER)
        for name, rows, coords in entries:
            name = _check_name(name)
            if picks:
                picks.writelines(f"{name} {row}\n" for row in rows)
            if listing:
                listing.write(f"{name} {_check_name(coords)}\n")


def append_combined(picks_path: Path | None, list_path: Path | None, name: str,
                    rows: list[str], coords: str) -> None:
    """Add one micrograph to the combined files (each rewritten atomically: copy + append)."""
    name = _check_name(name)
    for path, header, lines in ((picks_path, _PICKS_HEADER, [f"{name} {r}\n" for r in rows]),
                                (list_path, _LIST_HEADER, [f"{name} {_check_name(coords)}\n"])):
        if path is None:
            continue
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
            if Path(path).is_file():
                with open(path, encoding="utf-8") as old:
                    shutil.copyfileobj(old, out)
            else:
                out.write(header)
            out.writelines(lines)


def _maybe_atomic(path: Path | None):
    """``atomic_write(path)`` when a path is given, else a context giving None."""
    return nullcontext(None) if path is None else atomic_write(path)
