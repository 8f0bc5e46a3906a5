"""The user's edits of a picks layer: added, moved and deleted points, kept across re-picks.

New points get ``source == "manual"`` from the layer's ``feature_defaults`` (set by
``_layers.points_layer_data``); a point the user drags also becomes manual. Deleted model picks
are found by comparing the last model output with what the layer holds now. Manual points are
never overwritten by model output, and deleted picks do not come back when picking again.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

log = logging.getLogger(__name__)

PICK_FLOOR = 0.1  # candidates kept below the shown threshold, so the slider can lower it live
MATCH_RADIUS = 0.2  # x box: a model pick still present in the layer within this distance is kept
MANUAL_EXCLUSION = 0.5  # x box: a new model pick this close to a manual point duplicates it
_COLUMNS = ["x", "y", "score", "slice"]


def image_data(layer):
    """The array of an image layer (its full-resolution level when multiscale)."""
    return layer.data[0] if layer.multiscale else layer.data


def _slice_of(df: pd.DataFrame) -> np.ndarray:
    return df["slice"].to_numpy(int) if "slice" in df.columns else np.zeros(len(df), int)


def near(points: pd.DataFrame, others: pd.DataFrame, distance: float) -> np.ndarray:
    """Mask of the ``points`` rows within ``distance`` of an ``others`` row on the same slice."""
    mask = np.zeros(len(points), dtype=bool)
    if len(points) == 0 or len(others) == 0:
        return mask
    p_slice, o_slice = _slice_of(points), _slice_of(others)
    for s in np.unique(p_slice):
        rows = np.flatnonzero(p_slice == s)
        other = others[o_slice == s]
        if len(other) == 0:
            continue
        tree = cKDTree(other[["x", "y"]].to_numpy(float))
        d, _ = tree.query(points.iloc[rows][["x", "y"]].to_numpy(float))
        mask[rows] = d <= distance
    return mask


def empty_picks(stack: bool) -> pd.DataFrame:
    """An empty coordinates table (with ``slice`` for a stack)."""
    columns = _COLUMNS if stack else _COLUMNS[:3]
    return pd.DataFrame({c: pd.Series(dtype=int if c == "slice" else float) for c in columns})


def merge_picks(current: pd.DataFrame, new: pd.DataFrame, slices, deleted: pd.DataFrame,
                box: float) -> pd.DataFrame:
    """The picks to show after a run: manual points kept, model picks of ``slices`` replaced.

    Parameters
    ----------
    current : DataFrame
        What the picks layer holds (``coordinates_from_points``), ``source`` column included.
    new : DataFrame
        The model's new picks (x, y, score[, slice]) of the slices just picked.
    slices : collection of int or None
        Slices just picked (None: a single micrograph, every model pick is replaced).
    deleted : DataFrame
        Model picks the user deleted: new picks there are dropped.
    box : float
        Box in micrograph pixels.
    """
    if len(current):
        in_run = np.ones(len(current), bool) if slices is None else np.isin(_slice_of(current),
                                                                             list(slices))
        keep = current[(current["source"] == "manual") | ~in_run]
    else:
        keep = current
    manual = keep[keep["source"] == "manual"] if len(keep) else keep
    new = new.assign(source="model")
    drop = near(new, manual, MANUAL_EXCLUSION * box) | near(new, deleted, MATCH_RADIUS * box)
    new = new[~drop]
    columns = [c for c in ("x", "y", "score", "source", "slice") if c in new.columns or c in keep]
    merged = pd.concat([keep.reindex(columns=columns), new.reindex(columns=columns)],
                       ignore_index=True)
    if "slice" in merged.columns:
        merged["slice"] = merged["slice"].astype(int)
    return merged


class EditTracker:
    """Remembers the model output shown in a picks layer and what the user deleted from it.

    Parameters
    ----------
    layer : napari.layers.Points
        The picks layer.
    box : float
        Box in micrograph pixels (for the match radius).
    """

    def __init__(self, layer, box: float) -> None:
        self.layer = None
        self.box = box
        self.model_picks = empty_picks(layer.ndim == 3)
        self.deleted = empty_picks(layer.ndim == 3)
        self._updating = False
        self.attach(layer)

    def attach(self, layer) -> None:
        """Follow ``layer`` (the plugin may replace the layer object)."""
        if layer is self.layer:
            return
        self.detach()
        self.layer = layer
        layer.events.data.connect(self._on_data)

    def detach(self) -> None:
        """Stop following the layer's events."""
        if self.layer is not None:
            self.layer.events.data.disconnect(self._on_data)
            self.layer = None

    @contextlib.contextmanager
    def updating(self):
        """Changes made inside are the plugin's own, not the user's edits."""
        self._updating = True
        try:
            yield
        finally:
            self._updating = False

    def _on_data(self, event) -> None:
        # A drag emits "changed" for the selected points only; the plugin's own updates are
        # wrapped in ``updating``.
        if self._updating or str(getattr(event, "action", "")) != "changed":
            return
        indices = [int(i) for i in getattr(event, "data_indices", ())]
        n = len(self.layer.data)
        if not indices or len(indices) >= n:
            return
        features = self.layer.features.copy()
        features["source"] = features["source"].astype(object)
        features.loc[[i % n for i in indices], "source"] = "manual"
        with self.updating():
            self.layer.features = features
        log.debug("%d moved points marked manual", len(indices))

    def current_deleted(self, current: pd.DataFrame) -> pd.DataFrame:
        """Deleted picks so far: earlier ones plus last model picks no longer in ``current``."""
        gone = self.model_picks[~near(self.model_picks, current, MATCH_RADIUS * self.box)]
        parts = [d for d in (self.deleted, gone) if len(d)]
        return pd.concat(parts, ignore_index=True) if parts else self.deleted.iloc[:0]

    def record(self, current: pd.DataFrame, model_picks: pd.DataFrame, box: float) -> None:
        """Store the model picks now in the layer; fold the deletions seen so far into memory.

        Parameters
        ----------
        current : DataFrame
            The layer's points before the update (to find deletions since the last record).
        model_picks : DataFrame
            The layer's model picks after the update (every slice).
        box : float
            Box in micrograph pixels.
        """
        self.deleted = self.current_deleted(current)
        self.box = box
        model_picks = model_picks.drop(columns="source", errors="ignore")
        self.model_picks = model_picks.reset_index(drop=True)


@dataclass
class RetrainParameters:
    """Widget state -> arguments of :func:`~napari_deeppicker._widgets._jobs.retrain_and_pick`.

    Shown points (kept and added) are the positives, deleted model picks the hard negatives,
    and picks hidden by the threshold are neither (random negatives keep away from them).
    """

    image: object
    layer: object
    tracker: EditTracker | None
    model: object
    epochs: int
    threshold: float
    device: str

    def validation_error(self) -> str | None:
        """What prevents retraining, or None."""
        if self.image is None or self.layer is None or self.tracker is None or self.model is None:
            return "Pick this image first, edit its picks, then retrain from the edits."
        if not np.any(np.asarray(self.layer.shown, bool)):
            return (f"{self.layer.name}: no picks to train on "
                    "(all deleted or hidden by the threshold).")
        return None

    def slices(self) -> list[int] | None:
        """Slices of a stack that hold picks (None for a single micrograph)."""
        if self.layer.ndim != 3:
            return None
        current = np.round(np.asarray(self.layer.data)[:, 0]).astype(int)
        return sorted(set(current) | set(_slice_of(self.tracker.model_picks)))

    def as_core_arguments(self) -> dict:
        """Keyword arguments of ``retrain_and_pick``."""
        from napari_deeppicker._layers import coordinates_from_points
        from napari_deeppicker.core.picking import PickConfig
        from napari_deeppicker.core.training import TrainConfig

        current = coordinates_from_points(self.layer)
        shown = np.asarray(self.layer.shown, bool)
        deleted = self.tracker.current_deleted(current)
        slices = self.slices()
        keys = [0] if slices is None else slices
        data = image_data(self.image)

        def per_slice(df):
            return {k: df[_slice_of(df) == k][["x", "y"]].reset_index(drop=True) for k in keys}

        return {
            "model": self.model,
            "images": {k: data if slices is None else data[k] for k in keys},
            "positives": per_slice(current[shown]),
            "negatives": per_slice(deleted),
            "avoid": per_slice(current[~shown]),
            "box": self.tracker.box,
            "train_config": TrainConfig(epochs=self.epochs, patience=2, device=self.device),
            # The user's edits say these micrographs hold particles: no noise-null guard here.
            "pick_config": PickConfig(threshold=min(self.threshold, PICK_FLOOR), null_check=False),
            "device": self.device,
        }
