"""npe2 writers: points layers -> STAR, BOX or CSV coordinates files (written atomically by core).

Every writer takes napari's single-layer arguments ``(path, data, meta)`` where ``meta`` holds the
layer's ``features``, ``metadata``, ``size``... and returns the list of written paths. Scores and
the ``source`` (model / manual) of each point are kept in STAR (``_rlnAutopickFigureOfMerit`` and
a ``_deeppickerSource`` column, which RELION ignores) and in CSV (every feature column). Points of
a stack (3D) carry their micrograph names from ``metadata["deeppicker"]["micrographs"]``, or
``slice_00000``-style names when unknown. Only the points shown are written: picks hidden by the
Pick dock's threshold slider are left out, so the file holds what the user sees.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd

from napari_deeppicker._layers import METADATA_KEY, coordinates_from_points
from napari_deeppicker.core import io
from napari_deeppicker.core.errors import CoordinatesError

logger = logging.getLogger(__name__)


def _layer_frame(data, meta: dict) -> tuple[pd.DataFrame, dict]:
    """Coordinates DataFrame of a points layer and its ``deeppicker`` metadata."""
    metadata = meta.get("metadata") or {}
    df = coordinates_from_points(data, meta.get("features"), metadata)
    shown = np.asarray(meta.get("shown", np.ones(len(df), bool)), dtype=bool).ravel()
    if shown.shape == (len(df),) and not shown.all():
        logger.info("leaving out %d points hidden by the threshold", int((~shown).sum()))
        df = df[shown].reset_index(drop=True)
    if "slice" in df and "micrograph" not in df:
        df["micrograph"] = [f"slice_{i:05d}" for i in df["slice"]]
    return df, dict(metadata.get(METADATA_KEY) or {})


def _drop_unknown_scores(df: pd.DataFrame) -> pd.DataFrame:
    if "score" in df and not np.isfinite(df["score"].to_numpy(float)).any():
        return df.drop(columns="score")
    return df


def write_star(path: str, data, meta: dict) -> list[str]:
    """Write a points layer as a RELION 3.1+ STAR file.

    Parameters
    ----------
    path : str
        Destination ``.star`` file.
    data : array-like
        Points (N, 2) = (row, col) or (N, 3) = (slice, row, col).
    meta : dict
        The layer's attributes (``features``, ``metadata``...).

    Returns
    -------
    list of str
        ``[path]``.
    """
    df, info = _layer_frame(data, meta)
    df = _drop_unknown_scores(df)
    columns = [c for c in ("x", "y", "score", "micrograph", "source") if c in df]
    io.write_coordinates(df[columns], path, fmt="star", pixel_size=info.get("pixel_size"))
    logger.info("wrote %d particles to %s", len(df), path)
    return [os.fspath(path)]


def _box_size(info: dict, meta: dict) -> int:
    box = info.get("box")
    if box is None:
        sizes = np.asarray(meta.get("size", []), dtype=float).ravel()
        if not sizes.size:
            raise CoordinatesError(
                "writing a BOX file needs the box size: "
                "the layer has neither a box nor a point size"
            )
        box = float(np.median(sizes))
    return int(round(float(box)))


def write_box(path: str, data, meta: dict) -> list[str]:
    """Write a points layer of one micrograph as an EMAN2 BOX file.

    The box size comes from ``metadata["deeppicker"]["box"]``, else from the points' size.

    Parameters
    ----------
    path : str
        Destination ``.box`` file.
    data : array-like
        Points (N, 2) = (row, col), or 3D points all on one slice.
    meta : dict
        The layer's attributes.

    Returns
    -------
    list of str
        ``[path]``.

    Raises
    ------
    CoordinatesError
        If the points span several slices (a BOX file holds one micrograph).
    """
    df, info = _layer_frame(data, meta)
    if "slice" in df and df["slice"].nunique() > 1:
        raise CoordinatesError(
            f"{path}: a BOX file holds one micrograph but the points lie on "
            f"{df['slice'].nunique()} slices; save them as STAR or CSV"
        )
    io.write_coordinates(df[["x", "y"]], path, fmt="box", box=_box_size(info, meta))
    return [os.fspath(path)]


def write_csv(path: str, data, meta: dict) -> list[str]:
    """Write a points layer as CSV: ``x, y, score, source`` (+ ``micrograph``, ``slice``, features).

    Parameters
    ----------
    path : str
        Destination ``.csv`` file.
    data : array-like
        Points (N, 2) = (row, col) or (N, 3) = (slice, row, col).
    meta : dict
        The layer's attributes.

    Returns
    -------
    list of str
        ``[path]``.
    """
    df, _ = _layer_frame(data, meta)
    io.write_coordinates(df, path, fmt="csv")
    return [os.fspath(path)]
