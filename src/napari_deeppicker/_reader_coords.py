"""npe2 reader of particle coordinates files: RELION STAR, EMAN2 BOX, CSV and Topaz tables.

Points are in pixels of the micrograph, napari order (row, col), as the micrograph reader keeps
``scale`` 1: they land on the right pixels of a micrograph opened by this plugin. Scores go to the
``score`` feature and the pick source (model / manual) to ``source``.

Readers have no access to the viewer, so a multi-micrograph file (STAR, Topaz, CSV with a
``micrograph`` column) opens as 3D points whose ``slice`` is the rank of the micrograph name among
the file's sorted names (a CSV written by this plugin keeps its own ``slice`` column). For a folder
holding exactly the file's micrographs this is the folder stack's order; in general the names are
in ``metadata["deeppicker"]["micrographs"]`` so that a widget can place the points on a stack
layer with :func:`napari_deeppicker._layers.slices_from_micrographs`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_deeppicker._layers import points_layer_data
from napari_deeppicker.core import io
from napari_deeppicker.core._coords import detect_format, strip_pick_suffix
from napari_deeppicker.core._files import file_stem
from napari_deeppicker.core.errors import CoordinatesError

logger = logging.getLogger(__name__)

COORDINATE_SUFFIXES = (".star", ".box", ".csv", ".txt", ".tsv")
DEFAULT_BOX = 64
"""Drawn point size (pixels) when a coordinates file does not store the box size."""


def _name_of(path) -> str:
    return os.path.basename(os.fspath(path)).lower()


def get_coordinates_reader(path) -> Callable | None:
    """npe2 ``get_reader`` for coordinates files (STAR, BOX, CSV, Topaz ``.txt``/``.tsv``).

    Parameters
    ----------
    path : str or list of str
        One or several files.

    Returns
    -------
    callable or None
        :func:`read_coordinates_files`, or None for paths that are not coordinates tables (a
        CSV without ``x``/``y`` columns, a text file without a Topaz header...).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for item in paths:
        if not (_name_of(item).endswith(COORDINATE_SUFFIXES) and os.path.isfile(item)):
            return None
        if not _is_coordinates_table(item):
            return None
    return read_coordinates_files


def _is_coordinates_table(path) -> bool:
    """Whether a file looks like coordinates: STAR/BOX by name, CSV/Topaz by their header."""
    name = _name_of(path)
    if name.endswith((".star", ".box")):
        return True
    try:
        if name.endswith(".csv"):
            with open(path, encoding="utf-8", errors="replace") as fh:
                header = next((line for line in fh if line.strip()), "")
            return {"x", "y"} <= {t.strip().lower() for t in header.split(",")}
        detect_format(path)  # Topaz header, x,y CSV header or STAR data_ block
        return True
    except (CoordinatesError, OSError):
        return False


def read_coordinates_files(path) -> list[tuple]:
    """Read coordinates files as points layers (one per file, scores in ``features``).

    Parameters
    ----------
    path : str or list of str
        STAR, BOX, CSV or Topaz files.

    Returns
    -------
    list of tuple
        LayerDataTuples ``(data, kwargs, "points")``.

    Raises
    ------
    CoordinatesError
        If a file is malformed.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [read_coordinates_file(p) for p in paths]


def read_coordinates_file(path) -> tuple:
    """One coordinates file as a points layer named ``"<micrograph> picks"``.

    The micrograph is the file's only ``micrograph`` value, else the file stem without a picker
    suffix (``mic1_autopick.star`` -> ``mic1``). The ``source`` feature comes from the file, else
    it is ``"model"`` when the file holds scores and ``"manual"`` otherwise. Files of several
    micrographs give 3D points (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
        The coordinates file.

    Returns
    -------
    tuple
        ``(data, kwargs, "points")``.
    """
    path = Path(path)
    df = io.read_coordinates(path)
    stem = strip_pick_suffix(file_stem(path))
    meta = {"path": os.fspath(path)}
    if "pixel_size" in df.attrs:
        meta["pixel_size"] = df.attrs["pixel_size"]
    names = sorted(set(df["micrograph"].astype(str))) if "micrograph" in df else []
    if "slice" not in df and len(names) > 1:
        ranks = {n: i for i, n in enumerate(names)}
        df = df.assign(slice=df["micrograph"].astype(str).map(ranks).astype(np.int64))
        meta["micrographs"] = names
    micrograph = names[0] if len(names) == 1 else stem
    if "slice" not in df:
        meta["micrograph"] = micrograph
    box = df.attrs.get("box")
    meta["box"] = box
    scored = "score" in df and bool(np.isfinite(df["score"].to_numpy(float)).any())
    source = "model" if scored else "manual"
    name = f"{stem if 'slice' in df else micrograph} picks"
    return points_layer_data(df, name=name, box=box or DEFAULT_BOX, source=source, metadata=meta)
