"""Readers and writers of the coordinates formats (RELION STAR, EMAN2 BOX, CSV, Topaz).

Readers take a path and return a DataFrame with float columns ``x``, ``y`` (particle centres)
and, when the file has them, ``score``, ``micrograph`` (a file stem) and ``source``. Writers take
such a DataFrame and return the file's text. Numbers are written with the shortest text that
reads back to the same float (``179.12`` stays ``179.12``; integral values are written as
integers), and read back with Python's correctly rounded :func:`float`, so round trips are exact.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ._files import file_stem
from .errors import BoxSizeError, CoordinatesError

logger = logging.getLogger(__name__)

# RELION keeps (and ignores) values under labels it does not know, so the pick source can
# travel through STAR files without clashing with a real RELION label.
SOURCE_LABEL = "deeppickerSource"
STAR_LABELS = {
    "rlnCoordinateX": "x",
    "rlnCoordinateY": "y",
    "rlnAutopickFigureOfMerit": "score",
    "rlnMicrographName": "micrograph",
    SOURCE_LABEL: "source",
}
TOPAZ_COLUMNS = {"image_name": "micrograph", "x_coord": "x", "y_coord": "y", "score": "score"}
_PIXEL_SIZE_LABELS = ("rlnMicrographPixelSize", "rlnImagePixelSize")
# Enough digits for exact decimal arithmetic on any double written as its shortest repr.
_DECIMAL_PRECISION = 1200


def format_float(value: float) -> str:
    """Shortest text that reads back as the same float; integral values without a decimal point."""
    v = float(value)
    if v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def parse_floats(values: Sequence, column: str, path: Path) -> np.ndarray:
    """Convert text values to float64 exactly; CoordinatesError naming the file on bad values."""
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise CoordinatesError(
                f"{path}: column {column} holds a non-numeric value {value!r} (data row {i + 1})"
            ) from None
    return out


def _names(values: Sequence, column: str, path: Path) -> list[str]:
    """Micrograph names of a table column; CoordinatesError when a row lacks one."""
    for i, value in enumerate(values):
        if not isinstance(value, str) or not value:
            raise CoordinatesError(f"{path}: column {column} is missing in data row {i + 1}")
    return list(values)


def _format_decimal(value: decimal.Decimal) -> str:
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _order(df: pd.DataFrame) -> pd.DataFrame:
    known = [c for c in ("x", "y", "score", "micrograph", "source") if c in df.columns]
    return df[known + [c for c in df.columns if c not in known]]


# --- RELION STAR -------------------------------------------------------------------------------


def read_star(path: Path) -> pd.DataFrame:
    """Read RELION 3.0 (one ``data_`` block) or 3.1+ (``data_optics`` + ``data_particles``) STAR."""
    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=list(STAR_LABELS))
    except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, OSError) as err:
        raise CoordinatesError(f"{path}: not a readable STAR file ({err})") from err
    tables = {
        name: pd.DataFrame([block]) if isinstance(block, dict) else block
        for name, block in blocks.items()
        if isinstance(block, (dict, pd.DataFrame))
    }
    if not tables:
        raise CoordinatesError(f"{path}: no data_ block with a loop_ (not a STAR file?)")
    needed = {"rlnCoordinateX", "rlnCoordinateY"}
    with_coords = [n for n, t in tables.items() if needed <= set(t.columns)]
    if not with_coords:
        found = ", ".join(f"data_{n}" for n in tables)
        raise CoordinatesError(
            f"{path}: no block with _rlnCoordinateX and _rlnCoordinateY ({found})"
        )
    table = tables["particles" if "particles" in with_coords else with_coords[0]]
    df = pd.DataFrame({
        "x": parse_floats(table["rlnCoordinateX"].tolist(), "_rlnCoordinateX", path),
        "y": parse_floats(table["rlnCoordinateY"].tolist(), "_rlnCoordinateY", path),
    })
    if "rlnAutopickFigureOfMerit" in table:
        df["score"] = parse_floats(
            table["rlnAutopickFigureOfMerit"].tolist(), "_rlnAutopickFigureOfMerit", path
        )
    if "rlnMicrographName" in table:
        df["micrograph"] = [file_stem(str(v)) for v in table["rlnMicrographName"]]
    if SOURCE_LABEL in table:
        df["source"] = [str(v) for v in table[SOURCE_LABEL]]
    optics = tables.get("optics")
    if optics is not None and len(optics):
        sizes = [optics[label].iloc[0] for label in _PIXEL_SIZE_LABELS if label in optics]
        try:
            if sizes:
                df.attrs["pixel_size"] = float(sizes[0])
        except (TypeError, ValueError):
            logger.warning("%s: ignoring the non-numeric pixel size %r", path, sizes[0])
    return df


def star_text(df: pd.DataFrame, pixel_size: float | None = None) -> str:
    """RELION STAR text: ``data_optics`` + ``data_particles`` with a pixel size, else ``data_``."""
    particles = pd.DataFrame({
        "rlnCoordinateX": [format_float(v) for v in df["x"]],
        "rlnCoordinateY": [format_float(v) for v in df["y"]],
    })
    if "score" in df:
        particles["rlnAutopickFigureOfMerit"] = [format_float(v) for v in df["score"]]
    if "micrograph" in df:
        particles["rlnMicrographName"] = [str(v) for v in df["micrograph"]]
    if "source" in df:
        particles[SOURCE_LABEL] = [str(v) for v in df["source"]]
    if pixel_size is None:
        return starfile.to_string({"": particles})
    particles["rlnOpticsGroup"] = 1
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnMicrographPixelSize": [format_float(pixel_size)],
        "rlnImagePixelSize": [format_float(pixel_size)],
    })
    return starfile.to_string({"optics": optics, "particles": particles})


# --- EMAN2 BOX ---------------------------------------------------------------------------------


def read_box(path: Path) -> pd.DataFrame:
    """Read an EMAN2 ``.box`` file (lower-left corner, width, height); returns box centres."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CoordinatesError(f"{path}: not a text BOX file ({err})") from err
    xs, ys, widths = [], [], []
    with decimal.localcontext() as ctx:
        ctx.prec = _DECIMAL_PRECISION
        for lineno, line in enumerate(text.splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            try:
                x, y, w, h = (decimal.Decimal(f) for f in fields[:4])
            except (ValueError, decimal.InvalidOperation):
                raise CoordinatesError(
                    f"{path}, line {lineno}: expected 'x y width height', got {line.strip()!r}"
                ) from None
            if not all(v.is_finite() for v in (x, y, w, h)) or w <= 0 or h <= 0:
                raise CoordinatesError(f"{path}, line {lineno}: invalid box {line.strip()!r}")
            xs.append(float(x + w / 2))
            ys.append(float(y + h / 2))
            widths.append(float(w))
    df = pd.DataFrame({"x": np.array(xs, dtype=np.float64), "y": np.array(ys, dtype=np.float64)})
    if widths:
        values, counts = np.unique(widths, return_counts=True)
        box = values[np.argmax(counts)]
        df.attrs["box"] = int(box) if float(box).is_integer() else float(box)
    return df


def box_text(df: pd.DataFrame, box: int) -> str:
    """EMAN2 BOX text: ``x - box/2  y - box/2  box  box`` per particle, tab separated."""
    try:
        valid = not isinstance(box, bool) and float(box).is_integer() and box > 0
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise BoxSizeError(f"the box size must be a positive integer, not {box!r}")
    box = int(box)
    lines = []
    with decimal.localcontext() as ctx:
        ctx.prec = _DECIMAL_PRECISION
        half = decimal.Decimal(box) / 2
        for x, y in zip(df["x"], df["y"]):
            corner_x = decimal.Decimal(repr(float(x))) - half
            corner_y = decimal.Decimal(repr(float(y))) - half
            corner = f"{_format_decimal(corner_x)}\t{_format_decimal(corner_y)}"
            lines.append(f"{corner}\t{box}\t{box}\n")
    return "".join(lines)


# --- CSV and Topaz tables ----------------------------------------------------------------------


def _read_table(path: Path, sep: str, what: str) -> pd.DataFrame:
    try:
        return pd.read_csv(
            path, sep=sep, dtype=str, keep_default_na=False, na_filter=False,
            skipinitialspace=True, engine="python" if len(sep) > 1 else "c",
        )
    except (ValueError, UnicodeDecodeError, OSError) as err:  # pandas' parse errors: ValueError
        raise CoordinatesError(f"{path}: not a readable {what} table ({err})") from err


def _table_to_frame(
    table: pd.DataFrame, names: dict[str, str], path: Path, what: str
) -> pd.DataFrame:
    """Rename the known columns of a text table and convert them; keep the others."""
    table = table.rename(columns=lambda c: str(c).strip())
    lookup = {str(c).lower(): c for c in table.columns}
    wanted = {new: lookup[old] for old, new in names.items() if old in lookup}
    if "x" not in wanted or "y" not in wanted:
        x_name, y_name = [old for old, new in names.items() if new in ("x", "y")]
        raise CoordinatesError(
            f"{path}: a {what} table needs {x_name} and {y_name} columns, "
            f"found {list(table.columns)}"
        )
    df = pd.DataFrame({
        "x": parse_floats(table[wanted["x"]].tolist(), wanted["x"], path),
        "y": parse_floats(table[wanted["y"]].tolist(), wanted["y"], path),
    })
    if "score" in wanted:
        df["score"] = parse_floats(table[wanted["score"]].tolist(), wanted["score"], path)
    if "micrograph" in wanted:
        names = _names(table[wanted["micrograph"]].tolist(), wanted["micrograph"], path)
        df["micrograph"] = [file_stem(v) for v in names]
    if "source" in wanted:
        df["source"] = [v if isinstance(v, str) else "" for v in table[wanted["source"]]]
    for column in table.columns:
        if column not in wanted.values():
            try:
                df[column] = pd.to_numeric(table[column]).to_numpy()
            except (ValueError, TypeError):
                df[column] = table[column].to_numpy()
    return df


def _text_columns(df: pd.DataFrame, floats: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(df)))
    for column in df.columns:
        values = df[column].tolist()
        if column in floats or pd.api.types.is_float_dtype(df[column]):
            out[column] = [format_float(v) for v in values]
        else:
            out[column] = [str(v) for v in values]
    return out


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV table with a header holding at least ``x`` and ``y``."""
    names = {"x": "x", "y": "y", "score": "score", "micrograph": "micrograph", "source": "source"}
    return _table_to_frame(_read_table(path, ",", "CSV"), names, path, "CSV")


def csv_text(df: pd.DataFrame) -> str:
    """CSV text: header ``x,y[,score][,micrograph][,source][,...]``."""
    return _text_columns(_order(df), ("x", "y", "score")).to_csv(index=False, lineterminator="\n")


def read_topaz(path: Path) -> pd.DataFrame:
    """Read a Topaz table (``image_name x_coord y_coord [score]``, tab separated)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline()
    sep = "\t" if "\t" in header else r"\s+"
    return _table_to_frame(_read_table(path, sep, "Topaz"), TOPAZ_COLUMNS, path, "Topaz")


def topaz_text(df: pd.DataFrame) -> str:
    """Topaz text: tab-separated ``image_name x_coord y_coord [score]``."""
    table = pd.DataFrame({
        "image_name": [str(v) for v in df["micrograph"]],
        "x_coord": [format_float(v) for v in df["x"]],
        "y_coord": [format_float(v) for v in df["y"]],
    })
    if "score" in df:
        table["score"] = [format_float(v) for v in df["score"]]
    return table.to_csv(sep="\t", index=False, lineterminator="\n")
