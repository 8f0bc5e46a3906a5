"""Core results -> napari layer data, and back: the only place that swaps (x, y) <-> (row, col).

Core coordinates are DataFrames with ``x`` (column) and ``y`` (row) in micrograph pixels; napari
points are ``(row, col)``, or ``(slice, row, col)`` for a stack of micrographs (a DataFrame with an
integer ``slice`` column). Every derived layer copies the image layer's ``scale`` and
``translate`` so that it overlays the micrograph exactly. Provenance lives in
``layer.metadata["deeppicker"]``. This module imports neither Qt nor torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from napari_deeppicker import __version__

logger = logging.getLogger(__name__)

METADATA_KEY = "deeppicker"
SCORE_COLORMAP = "plasma"
"""Border colours of scored points (contrast limits 0..1)."""
MANUAL_COLOR = "cyan"
"""Border colour of points without a score (manual picks, reference coordinates)."""
HEATMAP_COLORMAP = "inferno"
_BORDER_WIDTH = 0.1  # fraction of the point size


def image_layer_metadata(
    path: str | os.PathLike | None, pixel_size: float | None, **extra: Any
) -> dict:
    """Provenance of a micrograph layer, for ``layer.metadata["deeppicker"]``.

    Parameters
    ----------
    path : str, os.PathLike or None
        The file or folder the image came from.
    pixel_size : float or None
        Angstrom per pixel (None when unknown).
    **extra
        Further entries (e.g. ``micrographs``: the stems of a stack's slices, ``files``).

    Returns
    -------
    dict
        ``path`` (str or None), ``pixel_size``, ``version`` and the ``extra`` entries.
    """
    path = None if path is None else os.fspath(path)
    return {"path": path, "pixel_size": pixel_size, "version": __version__, **extra}


def deeppicker_metadata(layer) -> dict:
    """The ``metadata["deeppicker"]`` dict of a layer (empty if absent or ``layer`` is None)."""
    if layer is None:
        return {}
    meta = getattr(layer, "metadata", None) or {}
    return dict(meta.get(METADATA_KEY) or {})


def _image_transform(image_layer, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """The image layer's scale and translate for ``ndim`` dims (its last ones, padded with 1/0)."""
    if image_layer is None:
        return np.ones(ndim), np.zeros(ndim)
    scale = np.array(image_layer.scale, dtype=float)  # copies: the result is modified
    translate = np.array(image_layer.translate, dtype=float)
    if len(scale) >= ndim:
        return scale[-ndim:], translate[-ndim:]
    pad = ndim - len(scale)
    return np.concatenate([np.ones(pad), scale]), np.concatenate([np.zeros(pad), translate])


def score_colormap():
    """The points border colormap: ``SCORE_COLORMAP`` with ``MANUAL_COLOR`` for NaN scores."""
    from napari.utils.colormaps import Colormap, ensure_colormap

    base = ensure_colormap(SCORE_COLORMAP)
    return Colormap(
        colors=base.colors, controls=base.controls, name="deeppicker_score",
        display_name="deeppicker score", nan_color=MANUAL_COLOR,
    )


def _slices(df: pd.DataFrame) -> np.ndarray:
    values = pd.to_numeric(df["slice"], errors="coerce").to_numpy(float)
    valid = np.isfinite(values) & (values >= 0)
    if not (valid.all() and (values == np.round(values)).all()):
        raise ValueError("the slice column must hold non-negative integers")
    return values.astype(np.int64)


def slices_from_micrographs(df: pd.DataFrame, micrographs: Sequence[str]) -> pd.DataFrame:
    """Add a ``slice`` column placing each row on the stack slice of its ``micrograph``.

    Parameters
    ----------
    df : pandas.DataFrame
        Coordinates with a ``micrograph`` column (stems).
    micrographs : sequence of str
        The stems of the stack's slices, in slice order (``metadata["deeppicker"]["micrographs"]``
        of a stack layer).

    Returns
    -------
    pandas.DataFrame
        The rows whose micrograph is in the stack, with ``slice``; rows of other micrographs are
        dropped (logged).
    """
    index = {str(name): i for i, name in enumerate(micrographs)}
    slices = df["micrograph"].astype(str).map(index)
    missing = slices.isna()
    if missing.any():
        names = sorted(set(df.loc[missing, "micrograph"].astype(str)))
        logger.warning("%d coordinates belong to micrographs not in the stack: %s",
                       int(missing.sum()), names[:5])
    out = df.loc[~missing].copy()
    out["slice"] = slices[~missing].astype(np.int64).to_numpy()
    return out.reset_index(drop=True)


def points_layer_data(
    df: pd.DataFrame,
    *,
    name: str,
    box: float,
    image_layer=None,
    source: str = "model",
    metadata: dict | None = None,
) -> tuple:
    """Points LayerDataTuple from particle coordinates.

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``x`` (column), ``y`` (row), optionally ``score``, ``source``, ``micrograph``, an
        integer ``slice`` (for a stack: the points become 3D) and further per-point columns,
        which become features.
    name : str
        Layer name (``"<image> picks"``).
    box : float
        Box size in micrograph pixels: the drawn circle diameter.
    image_layer : napari.layers.Image, optional
        The micrograph layer whose ``scale`` and ``translate`` (and pixel size) are copied.
    source : str
        ``source`` feature of rows without a ``source`` column (``"model"`` / ``"manual"``).
    metadata : dict, optional
        Extra entries for ``metadata["deeppicker"]`` (e.g. ``micrographs`` of a stack, model,
        threshold).

    Returns
    -------
    tuple
        ``(data, kwargs, "points")``: data (N, 2) = (row, col), or (N, 3) = (slice, row, col).
    """
    if not {"x", "y"} <= set(df.columns):
        raise ValueError(f"coordinates need x and y columns, got {list(df.columns)}")
    rows, cols = df["y"].to_numpy(float), df["x"].to_numpy(float)
    stack = "slice" in df.columns
    data = np.column_stack([_slices(df), rows, cols] if stack else [rows, cols]).astype(float)
    data = data.reshape(len(df), 3 if stack else 2)
    n = len(df)
    features = pd.DataFrame({
        "score": df["score"].to_numpy(float) if "score" in df else np.full(n, np.nan),
        "source": df["source"].astype(str).to_numpy() if "source" in df else [str(source)] * n,
    })
    mic_names = df["micrograph"].astype(str) if "micrograph" in df else None
    in_metadata = mic_names is not None and (stack or mic_names.nunique() <= 1)
    defaults = {"score": np.nan, "source": "manual"}
    for column in df.columns:
        if column not in ("x", "y", "slice", "score", "source") and not (
            column == "micrograph" and in_metadata
        ):
            features[column] = df[column].to_numpy()
            defaults[column] = np.nan if pd.api.types.is_numeric_dtype(df[column]) else ""
    meta = {
        "box": box,
        "source": source,
        "pixel_size": deeppicker_metadata(image_layer).get("pixel_size"),
        "version": __version__,
    }
    if in_metadata and n and stack:
        listed = [""] * (int(data[:, 0].max()) + 1)
        for i, mic in zip(data[:, 0].astype(int), mic_names):
            listed[i] = mic
        meta["micrographs"] = listed
    elif in_metadata and n:
        meta["micrograph"] = mic_names.iloc[0]
    meta.update(metadata or {})
    scale, translate = _image_transform(image_layer, data.shape[1])
    kwargs = {
        "name": name,
        "features": features,
        "feature_defaults": defaults,
        "size": box,
        "symbol": "disc",
        "face_color": "transparent",
        "border_width": _BORDER_WIDTH,
        "border_width_is_relative": True,
        "border_colormap": score_colormap(),
        "border_contrast_limits": (0.0, 1.0),
        "border_color": "score",
        "scale": scale,
        "translate": translate,
        "metadata": {METADATA_KEY: meta},
    }
    return data, kwargs, "points"


def coordinates_from_points(
    layer_or_data, features: pd.DataFrame | None = None, metadata: dict | None = None
) -> pd.DataFrame:
    """Particle coordinates from a points layer (or its data and features): the inverse.

    Parameters
    ----------
    layer_or_data : napari.layers.Points or array-like
        A points layer, or its data (N, 2) = (row, col) / (N, >=3) = (..., slice, row, col).
    features : pandas.DataFrame, optional
        Per-point features when ``layer_or_data`` is an array (taken from the layer otherwise).
    metadata : dict, optional
        The layer's ``metadata`` (taken from the layer otherwise); its ``deeppicker``
        ``micrograph`` / ``micrographs`` entries add a ``micrograph`` column.

    Returns
    -------
    pandas.DataFrame
        ``x``, ``y``, ``score`` (NaN when unknown), ``source``, ``micrograph`` when known,
        ``slice`` (int) for 3D points, then the other features.
    """
    if hasattr(layer_or_data, "features") and hasattr(layer_or_data, "data"):
        data, features = layer_or_data.data, layer_or_data.features
        metadata = layer_or_data.metadata if metadata is None else metadata
    else:
        data = layer_or_data
    data = np.asarray(data, dtype=float)
    data = data.reshape(0, 2) if data.size == 0 and data.ndim != 2 else data
    n = len(data)
    features = pd.DataFrame(index=range(n)) if features is None else features.reset_index(drop=True)
    if len(features) != n:
        raise ValueError(f"{n} points but {len(features)} rows of features")
    df = pd.DataFrame({"x": data[:, -1], "y": data[:, -2]})
    df["score"] = features["score"].to_numpy(float) if "score" in features else np.full(n, np.nan)
    df["source"] = features["source"].astype(str).to_numpy() if "source" in features else "manual"
    meta = dict((metadata or {}).get(METADATA_KEY) or {})
    if data.shape[1] >= 3:
        slices = np.round(data[:, -3]).astype(np.int64)
        names = list(meta.get("micrographs") or [])
        if names and n and slices.min() >= 0 and slices.max() < len(names):
            df["micrograph"] = [names[i] for i in slices]
        df["slice"] = slices
    elif meta.get("micrograph"):
        df["micrograph"] = str(meta["micrograph"])
    for column in features.columns:
        if column not in df.columns:
            df[column] = features[column].to_numpy()
    return df


def score_map_layer_data(score_map, *, name: str, image_layer=None) -> tuple:
    """Image LayerDataTuple of a score map (heatmap) that overlays the micrograph exactly.

    napari draws pixel ``k`` at ``translate + k * scale``; a map value ``[i, j]`` belongs to
    micrograph pixel ``origin + (i, j) * spacing``, so ``scale = spacing * image_scale`` and
    ``translate = image_translate + origin * image_scale``.

    Parameters
    ----------
    score_map : ScoreMap or sequence of ScoreMap
        One map (2D layer) or one per slice of a stack (3D layer); the maps of a stack must
        share shape, origin and spacing.
    name : str
        Layer name (``"<image> scores"``).
    image_layer : napari.layers.Image, optional
        The micrograph layer (its last two dims; the slice axis of a stack too).

    Returns
    -------
    tuple
        ``(data, kwargs, "image")``.
    """
    stack = isinstance(score_map, (list, tuple))
    maps = list(score_map) if stack else [score_map]
    if not maps:
        raise ValueError("no score map given")
    first = maps[0]
    for other in maps[1:]:
        same = (other.data.shape == first.data.shape and np.allclose(other.origin, first.origin)
                and np.allclose(other.spacing, first.spacing))
        if not same:
            raise ValueError("the score maps of a stack need the same shape, origin and spacing")
    data = np.stack([np.asarray(m.data, dtype=np.float32) for m in maps])
    data = data if stack else data[0]
    scale, translate = _image_transform(image_layer, data.ndim)
    origin, spacing = np.asarray(first.origin, float), np.asarray(first.spacing, float)
    scale[-2:], translate[-2:] = spacing * scale[-2:], translate[-2:] + origin * scale[-2:]
    kwargs = {
        "name": name,
        "colormap": HEATMAP_COLORMAP,
        "blending": "additive",
        "opacity": 0.5,
        "contrast_limits": (0.0, 1.0),
        "scale": scale,
        "translate": translate,
        "metadata": {METADATA_KEY: {
            "origin": tuple(float(v) for v in origin),
            "spacing": tuple(float(v) for v in spacing),
            "pixel_size": deeppicker_metadata(image_layer).get("pixel_size"),
            "version": __version__,
        }},
    }
    return data, kwargs, "image"


def _layer_ndim(data, layer_type: str) -> int:
    if layer_type == "points":
        return int(np.shape(data)[1]) if np.ndim(data) == 2 else 2
    return int(np.ndim(data))


def update_or_add(viewer, layer_data_tuple: tuple):
    """Add a layer, or replace the data of the existing layer with the same name and type.

    Re-running a step updates the plugin's own layer in place (no duplicates). A layer of the
    same name but another type or dimensionality is replaced at the same position.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    layer_data_tuple : tuple
        ``(data, kwargs, layer_type)`` with ``kwargs["name"]``.

    Returns
    -------
    napari.layers.Layer
        The updated or new layer.
    """
    data, kwargs, layer_type = layer_data_tuple
    name = kwargs["name"]
    position = None
    if name in viewer.layers:
        layer = viewer.layers[name]
        if layer._type_string == layer_type and layer.ndim == _layer_ndim(data, layer_type):
            layer.data = data
            for key, value in kwargs.items():
                if key != "name":
                    setattr(layer, key, value)
            layer.refresh()
            return layer
        position = viewer.layers.index(layer)
        viewer.layers.remove(layer)
    layer = getattr(viewer, f"add_{layer_type}")(data, **kwargs)
    if position is not None:
        viewer.layers.move(viewer.layers.index(layer), position)
    return layer
