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


def auto_threshold(model, image: np.ndarray, box: float, config=None, *, scores=None, device=None,
                   max_fdr: float = 0.1, seed: int = 0) -> float:
    """The automatic threshold of one micrograph: :func:`threshold_from_null` against its null.

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
    device : torch.device, optional
        Compute device.
    max_fdr : float
        Tolerated fraction of picks explained by the null.
    seed : int
        Seed of the phase randomisation.

    Returns
    -------
    float
        The threshold (1.0 when the micrograph looks like its own null, e.g. pure noise).
    """
    if scores is None:
        scores = candidate_scores(model, image, box, config, device)
    null = candidate_scores(model, null_image(image, seed), box, config, device)
    return threshold_from_null(scores, null, max_fdr=max_fdr)


def pick_auto(model, image: np.ndarray, box: float, config=None, device=None, *, max_fdr: float = 0.1,
              seed: int = 0):
    """Pick a micrograph with its automatic threshold (:func:`auto_threshold`).

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

    config = config or PickConfig()
    everything, score_map = pick_micrograph(model, image, box, replace(config, threshold=0.0, top_n=None), device)
    threshold = auto_threshold(model, image, box, config, scores=everything["score"].to_numpy(),
                               device=device, max_fdr=max_fdr, seed=seed)
    picks = everything[everything["score"] > threshold]
    if config.top_n is not None:
        picks = picks.head(config.top_n)
    picks = picks.reset_index(drop=True)
    picks.attrs["threshold"] = threshold
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


def _with_invert(model, invert: bool):
    from napari_deeppicker.core.model import PickerModel

    return PickerModel(model.net, replace(model.preprocess, invert=invert), model.metadata)


def polarity_margins(model, image: np.ndarray, box: float, config=None, device=None, seed: int = 0) -> dict:
    """How much more particle-like the micrograph scores than its null, in each polarity.

    Returns ``{"dark": m, "bright": m}``: the mean difference between the sorted candidate
    scores of the micrograph and of its phase-randomised null (as many as the shorter list).
    """
    null = null_image(image, seed)
    out = {}
    for name, flip in (("dark", False), ("bright", True)):
        m = _with_invert(model, model.preprocess.invert != flip)
        real = candidate_scores(m, image, box, config, device)
        fake = candidate_scores(m, null, box, config, device)
        k = min(real.size, fake.size)
        out[name] = float(np.mean(real[:k] - fake[:k])) if k else 0.0
    return out


def estimate_polarity(image: np.ndarray, box: float, model=None, *, method: str = "skewness",
                      device=None) -> str:
    """Whether particles are ``"dark"`` (as in raw cryo-EM) or ``"bright"`` on the background.

    Parameters
    ----------
    image : ndarray
        The micrograph.
    box : float
        Particle box in micrograph pixels.
    model : PickerModel, optional
        Needed by ``method="model"``.
    method : {"skewness", "model"}
        ``"skewness"``: sign of :func:`polarity_skewness` (fast, no model); ``"model"``: the
        polarity in which the model separates the micrograph from its null best
        (:func:`polarity_margins`).
    """
    if method == "model":
        if model is None:
            raise ValueError("estimate_polarity(method='model') needs a model")
        margins = polarity_margins(model, image, box, device=device)
        return "bright" if margins["bright"] > margins["dark"] else "dark"
    if method != "skewness":
        raise ValueError(f"unknown polarity method {method!r} (use 'skewness' or 'model')")
    return "bright" if polarity_skewness(image, box) > 0 else "dark"


def dataset_polarity(images, box: float, model=None, *, method: str = "skewness", max_images: int = 5,
                     device=None) -> tuple[str, list[str]]:
    """Majority polarity over the first ``max_images`` micrographs (ties: dark); and every vote."""
    votes = []
    for k, image in enumerate(images):
        if k >= max_images:
            break
        votes.append(estimate_polarity(image, box, model, method=method, device=device))
    polarity = "bright" if votes.count("bright") > votes.count("dark") else "dark"
    log.info("estimated polarity %s (votes: %s)", polarity, ", ".join(votes))
    return polarity, votes
