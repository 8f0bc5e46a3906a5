"""Polarity estimation and automatic score thresholds, from the micrograph itself.

A model trained on other molecules gives scores whose scale shifts from one molecule to the next,
so a fixed threshold of 0.5 is not enough for fully automated picking. The null used here is the
micrograph with its Fourier phases randomised (:func:`~napari_deeppicker.core.preprocess.phase_randomise`):
same power spectrum (CTF, noise, ice texture, particle density), no particle. Picking the null
with the same model tells how many picks of a given score the micrograph's texture alone produces.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from napari_deeppicker.core.preprocess import (
    PreprocessConfig,
    bandpass_resample,
    phase_randomise,
    rescaled_shape,
    robust_normalise,
)

log = logging.getLogger(__name__)

POLARITIES = ("dark", "bright", "auto")
AUTO = "auto"


def null_image(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """The phase-randomised micrograph (particle-free null), deterministic for a seed."""
    return phase_randomise(np.asarray(image, dtype=np.float32), np.random.default_rng(seed))


def candidate_scores(model, image: np.ndarray, box: float, config=None, device=None) -> np.ndarray:
    """Scores of every candidate pick (threshold 0, top_n ignored), by decreasing score."""
    from napari_deeppicker.core.picking import PickConfig, pick_micrograph

    config = replace(config or PickConfig(), threshold=0.0, top_n=None)
    picks, _ = pick_micrograph(model, image, box, config, device)
    return picks["score"].to_numpy(dtype=float)


def threshold_from_null(scores: np.ndarray, null_scores: np.ndarray, *, max_fdr: float = 0.1,
                        null_weight: float = 1.0, minimum: float = 0.05) -> float:
    """Lowest threshold at which the null explains at most ``max_fdr`` of the picks above it.

    Parameters
    ----------
    scores : ndarray
        Candidate scores on the micrograph.
    null_scores : ndarray
        Candidate scores on its null(s).
    max_fdr : float
        Largest tolerated ratio (null picks above t) / (micrograph picks above t).
    null_weight : float
        Factor applied to the null counts (1 / number of null images pooled).
    minimum : float
        The threshold never goes below this.

    Returns
    -------
    float
        The threshold; 1.0 (nothing picked) when no level is good enough, as on pure noise.
    """
    scores = np.sort(np.asarray(scores, dtype=float))[::-1]
    null_sorted = np.sort(np.asarray(null_scores, dtype=float))
    if scores.size == 0:
        return 1.0
    n_real = np.arange(1, scores.size + 1)
    n_null = (null_sorted.size - np.searchsorted(null_sorted, scores, side="left")) * null_weight
    ok = (n_null <= max_fdr * n_real) & (scores >= minimum)
    if not ok.any():
        return 1.0
    # The lowest passing level, as in Benjamini-Hochberg: the ratio need not be monotonic.
    k = int(np.flatnonzero(ok).max())
    return float(np.nextafter(scores[k], -np.inf))
