"""The "Einstein from noise" guard: does a micrograph hold anything its own noise null lacks?

A network shown only windows finds particle-like blobs in pure noise, and a window-level score
cannot tell them apart from real particles. A whole micrograph can: its particle-free *null*, the
rescaled micrograph with randomised Fourier phases (same power spectrum, CTF, noise and density of
texture; no particle), is scored like the micrograph itself, and the two sets of candidate scores
are compared. On pure noise the micrograph is statistically its own null, so nothing distinguishes
the two; particles put candidates above anything the null produces (a positive top-k evidence) or
shift the whole candidate distribution (a one-sided Kolmogorov-Smirnov test).

A micrograph is declared particle-free, and none of its picks is kept, when both say so: the mean
logit of its ``top`` best candidates exceeds the null's by at most ``margin`` *and* the KS p-value
is at least ``alpha``. The two numbers were set with the shipped general model on simulated
particle-free micrographs (10 looks x seeds 5000-5002, not the benchmark's seeds: evidence up to
0.95, KS p-values from 0.051 up) and simulated micrographs with particles (evidence from 1.45 up,
or KS p < 1e-3 where they are crowded), and checked against the leave-one-molecule-out models on
the real data (crowded beta-galactosidase saturates the top-10 evidence at 0, but its KS p-values
are below 1e-3; the ribosome's evidence is 2.1 or more). A weaker model (trained on 400
beta-galactosidase particles) gave evidence 0.6-1.8 and KS p-values up to 0.038 on crowded
micrographs of its molecule; ``alpha`` = 0.05 keeps those, at the price of a thin margin on
noise (lowest KS p-value seen there: 0.051). See BENCHMARKS.md for what the guard does. ``benchmarks/null_check.py`` and
``benchmarks/general_noise.py`` measure it. The guard fails where the network does not recognise
the particles at all (its null then looks more particle-like than the micrograph): such a
micrograph is emptied. The score map itself is never changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from napari_deeppicker.core.preprocess import PreparedImage, phase_randomise


@dataclass(frozen=True)
class NullCheck:
    """Outcome of the comparison of a micrograph's candidates with those of its null.

    Attributes
    ----------
    evidence : float
        Mean logit of the ``top`` best candidates minus the same on the null.
    ks_pvalue : float
        One-sided two-sample Kolmogorov-Smirnov p-value (micrograph scores larger than null's).
    particle_free : bool
        ``evidence <= margin`` and ``ks_pvalue >= alpha``: no pick is kept.
    n_candidates, n_null : int
        Candidate counts on the micrograph and on its null.
    """

    evidence: float
    ks_pvalue: float
    particle_free: bool
    n_candidates: int
    n_null: int

    def to_dict(self) -> dict:
        """JSON-able representation."""
        return {k: (bool(v) if isinstance(v, (bool, np.bool_)) else float(v) if isinstance(v, float)
                    else v) for k, v in asdict(self).items()}


def is_particle_free(picks) -> bool:
    """Whether the guard emptied the micrograph of these picks (``picks.attrs["null_check"]``)."""
    return bool(picks.attrs.get("null_check", {}).get("particle_free"))


def null_prepared(prepared: PreparedImage, seed: int = 0) -> PreparedImage:
    """The phase-randomised null of a prepared image, clipped to the same range.

    Randomising the rescaled image (not the micrograph) costs one small FFT; the seed makes the
    null, and so the picks, reproducible.
    """
    source = prepared.unclipped if prepared.unclipped is not None else prepared.data
    null = phase_randomise(source, np.random.default_rng(seed))
    low, high = float(prepared.data.min()), float(prepared.data.max())
    return PreparedImage(np.clip(null, low, high), prepared.scale, null)


def _logit(scores) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def compare_to_null(scores, null_scores, *, top: int = 10, margin: float = 1.0,
                    alpha: float = 0.05) -> NullCheck:
    """Decide whether a micrograph is particle-free from its and its null's candidate scores.

    Parameters
    ----------
    scores, null_scores : array-like
        Scores of every candidate (local maxima after cleaning, threshold 0) on the micrograph
        and on its null.
    top : int
        Number of best candidates compared (fewer when fewer exist).
    margin : float
        Top-k logit evidence above which the micrograph holds particles.
    alpha : float
        KS p-value below which the micrograph holds particles.
    """
    from scipy import stats

    real = np.sort(_logit(scores))[::-1]
    null = np.sort(_logit(null_scores))[::-1]
    k = min(top, real.size, null.size)
    if real.size == 0:
        return NullCheck(0.0, 1.0, True, 0, int(null.size))
    if k == 0:  # the null has no candidate at all: whatever the micrograph has stands out
        return NullCheck(float("inf"), 0.0, False, int(real.size), 0)
    evidence = float(real[:k].mean() - null[:k].mean())
    pvalue = float(stats.ks_2samp(real, null, alternative="less", method="asymp").pvalue)
    free = evidence <= margin and pvalue >= alpha
    return NullCheck(evidence, pvalue, bool(free), int(real.size), int(null.size))
