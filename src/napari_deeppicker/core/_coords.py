"""Public coordinates functions of ``core.io``: format detection, reading, writing, checks.

Import these through :mod:`napari_deeppicker.core.io`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from . import _coords_formats as formats
from ._files import atomic_write, file_stem
from .errors import CoordinatesError

logger = logging.getLogger(__name__)

COORD_FORMATS = ("star", "box", "csv", "topaz")
_BY_SUFFIX = {".star": "star", ".box": "box", ".csv": "csv"}
_TABLE_SUFFIXES = (".txt", ".tsv")
# Name endings that pickers add to a micrograph's stem in per-micrograph coordinates files.
PICK_SUFFIXES = ("_autopick", "_manualpick", "_manual_pick", "_manual", "_picks", "_pick",
                 "_coords", "_particles")
_READERS = {
    "star": formats.read_star,
    "box": formats.read_box,
    "csv": formats.read_csv,
    "topaz": formats.read_topaz,
}


def _first_line(path: Path) -> str:
    """First line that is neither blank nor a ``#`` comment (empty string if none)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for _, line in zip(range(200), fh):
            if line.strip() and not line.lstrip().startswith("#"):
                return line.strip()
    return ""


def detect_format(path: str | os.PathLike, fmt: str | None = None) -> str:
    """Return the coordinates format of a file: ``fmt`` if given, else from the name and content.

    ``.star``, ``.box`` and ``.csv`` go by extension; other names (``.txt``, ``.tsv``, ...) by
    their first line: a Topaz header (``image_name x_coord y_coord``), a CSV header with ``x``
    and ``y``, or a STAR ``data_`` block.

    Raises
    ------
    CoordinatesError
        If ``fmt`` is unknown or the format cannot be told.
    """
    path = Path(path)
    if fmt is not None:
        if str(fmt).lower() not in COORD_FORMATS:
            raise CoordinatesError(
                f"unknown coordinates format {fmt!r}; use one of {COORD_FORMATS}"
            )
        return str(fmt).lower()
    if path.suffix.lower() in _BY_SUFFIX:
        return _BY_SUFFIX[path.suffix.lower()]
    line = _first_line(path)
    tokens = {t.strip().lower() for t in line.replace(",", " ").split()}
    if {"x_coord", "y_coord"} <= tokens:
        return "topaz"
    if "," in line and {"x", "y"} <= {t.strip().lower() for t in line.split(",")}:
        return "csv"
    if line.startswith(("data_", "loop_")):
        return "star"
    raise CoordinatesError(
        f"{path}: cannot tell the coordinates format from the name or the first line "
        f"({line[:60]!r}); pass fmt= one of {COORD_FORMATS}"
    )


def _check_finite(df: pd.DataFrame, path: Path) -> None:
    bad = ~(np.isfinite(df["x"].to_numpy(float)) & np.isfinite(df["y"].to_numpy(float)))
    if bad.any():
        first = int(np.flatnonzero(bad)[0]) + 1
        raise CoordinatesError(
            f"{path}: {int(bad.sum())} of {len(df)} particles have NaN or infinite coordinates "
            f"(first in data row {first})"
        )


def read_coordinates(
    path: str | os.PathLike, *, box: int | None = None, fmt: str | None = None
) -> pd.DataFrame:
    """Read particle centres from a STAR, BOX, CSV or Topaz file.

    Parameters
    ----------
    path : str or os.PathLike
        The coordinates file.
    box : int, optional
        Expected box size; a BOX file stores its own (in ``df.attrs["box"]``) and a different
        one is logged. Other formats do not use it.
    fmt : {"star", "box", "csv", "topaz"}, optional
        Format; by default from the extension, or the first line for ``.txt``/``.tsv``.

    Returns
    -------
    pandas.DataFrame
        Columns ``x`` (column index) and ``y`` (row index) of the centres, float64, plus
        ``score``, ``micrograph`` (file stem; multi-micrograph STAR and Topaz tables) and
        ``source`` when the file holds them. ``attrs`` may hold ``box`` (BOX) and
        ``pixel_size`` (STAR with an optics block).

    Raises
    ------
    CoordinatesError
        If the file is missing or malformed, or a coordinate is NaN or infinite.
    """
    path = Path(path)
    if not path.is_file():
        raise CoordinatesError(f"{path}: no such file")
    fmt = detect_format(path, fmt)
    df = _READERS[fmt](path)
    _check_finite(df, path)
    stored = df.attrs.get("box")
    if box is not None and stored is not None and stored != box:
        logger.warning("%s stores box size %s, not %s; using the file's", path, stored, box)
    return df


def strip_pick_suffix(stem: str) -> str:
    """Drop a picker's suffix such as ``_autopick`` from a coordinates file stem."""
    for suffix in PICK_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def read_coordinates_by_micrograph(
    path_or_dir: str | os.PathLike, *, box: int | None = None
) -> dict[str, pd.DataFrame]:
    """Read coordinates of many micrographs, keyed by micrograph stem.

    Parameters
    ----------
    path_or_dir : str or os.PathLike
        A folder of per-micrograph files (``*.star``, ``*.box``, ``*.csv``, ``*.txt``,
        ``*.tsv``), or one file. Files with a ``micrograph`` column (multi-micrograph STAR,
        Topaz tables) are split by it; otherwise the key is the file stem without a picker
        suffix (``mic1_autopick.star`` -> ``mic1``, see ``PICK_SUFFIXES``).
    box : int, optional
        Passed to :func:`read_coordinates`.

    Returns
    -------
    dict of str to pandas.DataFrame
        Micrograph stem -> its coordinates (index 0..n-1).

    Raises
    ------
    CoordinatesError
        If nothing is found, a file is malformed, or two files hold the same micrograph.
    """
    path = Path(path_or_dir)
    if path.is_dir():
        suffixes = (*_BY_SUFFIX, *_TABLE_SUFFIXES)
        files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
        if not files:
            patterns = ", ".join("*" + s for s in suffixes)
            raise CoordinatesError(f"{path}: no coordinates files ({patterns})")
    elif path.is_file():
        files = [path]
    else:
        raise CoordinatesError(f"{path}: no such file or folder")
    result: dict[str, pd.DataFrame] = {}
    origin: dict[str, Path] = {}
    for file in files:
        try:
            fmt = detect_format(file)
        except CoordinatesError:
            if file == path:
                raise
            logger.info("skipping %s: not a coordinates table", file)
            continue
        df = read_coordinates(file, box=box, fmt=fmt)
        if "micrograph" in df and len(df):
            groups = df.groupby("micrograph", sort=False)
            parts = {str(k): g.reset_index(drop=True) for k, g in groups}
        else:
            parts = {strip_pick_suffix(file_stem(file)): df}
        for name, part in parts.items():
            if name in result:
                raise CoordinatesError(
                    f"coordinates for micrograph {name} are in both {origin[name]} and {file}"
                )
            result[name], origin[name] = part, file
    return result


def write_coordinates(
    df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    box: int | None = None,
    fmt: str | None = None,
    micrograph_name: str | None = None,
    pixel_size: float | None = None,
) -> None:
    """Write particle centres to a STAR, BOX, CSV or Topaz file, atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``x``, ``y`` and optionally ``score``, ``micrograph``, ``source`` (CSV keeps
        every column).
    path : str or os.PathLike
        Destination; the format comes from the extension (``.txt``/``.tsv`` -> Topaz).
    box : int, optional
        Box size in pixels; required for BOX (falls back to ``df.attrs["box"]``).
    fmt : {"star", "box", "csv", "topaz"}, optional
        Format, overriding the extension.
    micrograph_name : str, optional
        Micrograph name stored for every row (``_rlnMicrographName``, Topaz ``image_name``, CSV
        ``micrograph``); replaces a ``micrograph`` column.
    pixel_size : float, optional
        STAR only: adds a RELION 3.1 ``data_optics`` block with this pixel size (Angstrom).
        Without it a single ``data_`` loop is written, as RELION's autopick does.

    Raises
    ------
    CoordinatesError
        If the format is unknown, ``x``/``y`` are missing or not finite, BOX gets no box size or
        several micrographs, or Topaz gets no micrograph name.
    BoxSizeError
        If the box size is not a positive integer.
    """
    path = Path(path)
    if fmt is None:
        suffix = path.suffix.lower()
        fmt = "topaz" if suffix in _TABLE_SUFFIXES else _BY_SUFFIX.get(suffix)
        if fmt is None:
            raise CoordinatesError(f"{path}: cannot tell the format from the extension; pass fmt=")
    fmt = detect_format(path, fmt)
    if not {"x", "y"} <= set(df.columns):
        raise CoordinatesError(f"{path}: coordinates need x and y columns, got {list(df.columns)}")
    _check_finite(df, path)
    if micrograph_name is not None:
        df = df.assign(micrograph=str(micrograph_name))
    if fmt == "star":
        text = formats.star_text(df, pixel_size)
    elif fmt == "box":
        box = box if box is not None else df.attrs.get("box")
        if box is None:
            raise CoordinatesError(f"{path}: writing a BOX file needs the box size")
        if "micrograph" in df and df["micrograph"].nunique() > 1:
            n_mics = df["micrograph"].nunique()
            raise CoordinatesError(f"{path}: a BOX file holds one micrograph, got {n_mics}")
        text = formats.box_text(df, box)
    elif fmt == "csv":
        text = formats.csv_text(df)
    else:
        if "micrograph" not in df:
            raise CoordinatesError(
                f"{path}: a Topaz table needs micrograph names (pass micrograph_name=)"
            )
        text = formats.topaz_text(df)
    with atomic_write(path) as fh:
        fh.write(text)
    logger.debug("wrote %d particles to %s (%s)", len(df), path, fmt)


def check_coordinates_in_image(df: pd.DataFrame, shape: tuple[int, ...], name: str) -> None:
    """Raise if particle centres fall outside an image.

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``x`` (column) and ``y`` (row).
    shape : tuple of int
        The image shape (rows, cols).
    name : str
        What to call the coordinates in the message (usually the file name).

    Raises
    ------
    CoordinatesError
        If any centre lies outside the image area (-0.5 to size - 0.5 in pixel centres), saying
        how many and the image size.
    """
    rows, cols = int(shape[-2]), int(shape[-1])
    x, y = df["x"].to_numpy(float), df["y"].to_numpy(float)
    inside = (x >= -0.5) & (x <= cols - 0.5) & (y >= -0.5) & (y <= rows - 0.5)
    n_out = int(np.count_nonzero(~inside))
    if n_out:
        raise CoordinatesError(
            f"{name}: {n_out} of {len(df)} coordinates fall outside the {cols} x {rows} image "
            f"(x from {np.nanmin(x):g} to {np.nanmax(x):g}, y from {np.nanmin(y):g} to "
            f"{np.nanmax(y):g}); were they picked at another binning?"
        )
