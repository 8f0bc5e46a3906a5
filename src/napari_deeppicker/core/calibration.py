"""Polarity estimation and automatic score thresholds, from the micrograph itself.

A model trained on other molecules gives scores whose scale shifts from one molecule to the next,
so a fixed threshold of 0.5 is not enough for fully automated picking. ``threshold="auto"`` splits
the candidate scores of each micrograph in two (Otsu on the logit scale, never below 0.5). A null
made by randomising the micrograph's Fourier phases (same power spectrum, no particle) is also
available; it was measured to be too strict where particles are crowded or denoised.

Polarity (dark or bright particles) is estimated from the sign of the skewness of the micrograph
band-passed at the particle scale.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from napari_deeppicker.core.preprocess import (
    bandpass_resample,
    phase_randomise,
    rescaled_shape,
    robust_normalise,
)

log = logging.getLogger(__name__)


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
                        minimum: float = 0.05) -> float:
    """Lowest threshold at which the null explains at most ``max_fdr`` of the picks above it.

    Parameters
    ----------
    scores : ndarray
        Candidate scores on the micrograph.
    null_scores : ndarray
        Candidate scores on its null(s).
    max_fdr : float
        Largest tolerated ratio (null picks above t) / (micrograph picks above t).
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
    n_null = null_sorted.size - np.searchsorted(null_sorted, scores, side="left")
    ok = (n_null <= max_fdr * n_real) & (scores >= minimum)
    if not ok.any():
        return 1.0
    # The lowest passing level, as in Benjamini-Hochberg: the ratio need not be monotonic.
    k = int(np.flatnonzero(ok).max())
    return float(np.nextafter(scores[k], -np.inf))


def otsu_threshold(scores: np.ndarray, *, minimum: float = 0.5) -> float:
    """Otsu's split of the candidate scores of one micrograph, on the logit scale.

    The candidates (local maxima of the score map) of a micrograph with particles form two
    groups: background texture and particles. On an unseen molecule the particle group sits at a
    level that changes from one molecule to the next (0.96-0.995 in the leave-one-molecule-out
    runs), which Otsu's split follows; the logit spreads the saturated scores near 1.

    Parameters
    ----------
    scores : ndarray
        Candidate scores (threshold 0).
    minimum : float
        The threshold never goes below this: a model that scores pure noise below 0.5 then picks
        nothing on it.
    """
    from skimage.filters import threshold_otsu

    scores = np.asarray(scores, dtype=float)
    if scores.size < 3 or np.ptp(scores) == 0:
        return float(minimum)
    p = np.clip(scores, 1e-6, 1 - 1e-6)
    t = float(threshold_otsu(np.log(p / (1 - p))))
    return max(float(minimum), 1.0 / (1.0 + np.exp(-t)))


AUTO_METHODS = ("otsu", "null")


def auto_threshold(model, image: np.ndarray, box: float, config=None, *, scores=None,
                   method: str = "otsu", device=None, max_fdr: float = 0.1, seed: int = 0) -> float:
    """The automatic threshold of one micrograph, from its own candidate scores.

    Parameters
    ----------
    model : PickerModel
        The model (its preprocessing, including the polarity, is used).
    image : ndarray
        The micrograph.
    box : float
        Particle box in micrograph pixels.
    config : PickConfig, optional
        Picking settings (the threshold in it is ignored).
    scores : ndarray, optional
        Candidate scores of the micrograph when already computed.
    method : {"otsu", "null"}
        ``"otsu"``: :func:`otsu_threshold` (chosen by ``benchmarks/general_lomo.py``);
        ``"null"``: :func:`threshold_from_null` against the phase-randomised micrograph, which
        is too strict on crowded or denoised micrographs, whose null still looks particle-like.
    device : torch.device, optional
        Compute device.
    max_fdr, seed : float, int
        For ``"null"``: tolerated fraction of picks explained by the null; phase seed.

    Returns
    -------
    float
        The threshold.
    """
    if method not in AUTO_METHODS:
        raise ValueError(f"unknown automatic threshold method {method!r}; "
                         f"choose from {AUTO_METHODS}")
    if scores is None:
        scores = candidate_scores(model, image, box, config, device)
    if method == "otsu":
        return otsu_threshold(scores)
    null = candidate_scores(model, null_image(image, seed), box, config, device)
    return threshold_from_null(scores, null, max_fdr=max_fdr)


def pick_auto(model, image: np.ndarray, box: float, config=None, device=None):
    """Pick a micrograph with its automatic threshold (``threshold="auto"``, Otsu).

    Returns
    -------
    picks : DataFrame
        Columns x, y, score above the threshold, by decreasing score (``top_n`` applied).
    score_map : ScoreMap
        The dense score map.
    threshold : float
        The threshold chosen for this micrograph.
    """
    from napari_deeppicker.core.picking import PickConfig, pick_micrograph

    config = replace(config or PickConfig(), threshold="auto")
    picks, score_map = pick_micrograph(model, image, box, config, device)
    threshold = picks.attrs["threshold"]
    log.info("automatic threshold %.3f: %d picks", threshold, len(picks))
    return picks, score_map, threshold


def polarity_skewness(image: np.ndarray, box: float, *, lowpass_sigma: float = 4.0,
                      highpass_sigma: float = 64.0) -> float:
    """Skewness of the micrograph band-passed at the particle scale (box rescaled to 64 px).

    Particles are localised blobs of one sign over a symmetric background, so this skewness is
    negative when they are dark and positive when they are bright.
    """
    from scipy import stats

    image = np.asarray(image, dtype=np.float32)
    band = bandpass_resample(image, rescaled_shape(image.shape, box), lowpass_sigma, highpass_sigma)
    z = robust_normalise(band, None)
    m = max(1, min(z.shape) // 16)  # filter artefacts at the edges (stripes, wrap-around)
    return float(stats.skew(z[m:-m, m:-m].ravel()))


def estimate_polarity(image: np.ndarray, box: float) -> str:
    """Whether particles are ``"dark"`` (as in raw cryo-EM) or ``"bright"`` on the background.

    The sign of :func:`polarity_skewness`. Measured (``benchmarks/polarity.py``): right on every
    real micrograph here and on its negative, and on simulated ones without contamination; it
    can fail when large ice or carbon areas outweigh a few particles, so the CLI's default stays
    "dark" and ``auto`` is a choice.
    """
    return "bright" if polarity_skewness(image, box) > 0 else "dark"


def dataset_polarity(images, box: float, *, max_images: int = 5) -> tuple[str, list[str]]:
    """Majority polarity over the first ``max_images`` micrographs (ties: dark); and every vote."""
    votes = []
    for k, image in enumerate(images):
        if k >= max_images:
            break
        votes.append(estimate_polarity(image, box))
    polarity = "bright" if votes.count("bright") > votes.count("dark") else "dark"
    log.info("estimated polarity %s (votes: %s)", polarity, ", ".join(votes))
    return polarity, votes
