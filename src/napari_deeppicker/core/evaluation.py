"""Compare picks with reference particles: matching, precision / recall, ranked curves, plots.

A pick matches a reference particle when their centres are closer than ``radius * box``
(0.2 x box in the DeepPicker paper). Two matchings answer two different questions:

* **Optimal** (`match_picks`; the headline precision / recall / F1 / centre error of the picks as
  given, i.e. at the threshold they were picked with): the one-to-one assignment with the most
  matches and, among those, the smallest total centre distance. It is solved exactly on a sparse
  graph (only pairs closer than the radius are edges), so no dense matrix is ever built.
* **Ranked** (`ranked_matches`; the curves, average precision and best F1 of `evaluate`): picks
  are taken by decreasing ``score`` (table order without a score) and each takes the nearest
  still-unmatched reference particle within the radius, as object-detection AP does. The TP count
  of the top ``k`` picks then does not change when lower-ranked picks are added.

Undefined ratios are ``nan``, never a silent zero: precision is ``nan`` without picks, recall is
``nan`` without reference particles, F1 = 2 TP / (2 TP + FP + FN) is ``nan`` only when both are
empty, the centre error (mean matched distance / box) is ``nan`` without matches. Totals over
micrographs are micro-averaged (TP, FP and FN summed first).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ._matching import (
    MatchResult,
    _check_box,
    _ratio,
    match_picks,
    rank_order,
    ranked_matches,
)
from .errors import DeepPickerError

__all__ = [
    "EvaluationReport",
    "MatchResult",
    "curve_by_top_n",
    "evaluate",
    "match_picks",
    "noise_score_summary",
    "plot_report",
    "rank_order",
    "ranked_matches",
]

logger = logging.getLogger(__name__)

_COUNTS = ["tp", "fp", "fn", "precision", "recall", "f1", "centre_error"]


def _plain(value):
    """A JSON-able Python value: numpy scalars unwrapped, NaN and inf as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray, pd.Series)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


@dataclass
class EvaluationReport:
    """Result of `evaluate`: per micrograph, overall, and ranked over all micrographs pooled.

    ``curve`` has one row per number ``k`` of top picks (pooled by score): ``k``, ``score`` (of the
    k-th pick, the threshold that selects it), ``tp``, ``precision``, ``recall``, ``f1``.
    ``ranked_picks`` lists every pick in that order with its ``micrograph``, ``row`` (position in
    its input table), ``rank`` (within its micrograph), ``score`` and ``tp`` (ranked matching).
    ``matches`` holds the optimal `MatchResult` of each micrograph (labels for colouring).
    """

    box: float
    radius: float
    per_micrograph: pd.DataFrame
    overall: dict
    curve: pd.DataFrame
    ranked_picks: pd.DataFrame = field(repr=False)
    matches: dict[str, MatchResult] = field(repr=False)

    @property
    def average_precision(self) -> float:
        """Sum of the precision at the rank of each ranked TP, divided by the reference count."""
        hits = self.ranked_picks["tp"].to_numpy(dtype=bool)
        precision = self.curve["precision"].to_numpy()
        return _ratio(precision[hits].sum(), self.overall["n_reference"])

    def _best_row(self) -> int | None:
        if len(self.curve) == 0 or self.overall["n_reference"] == 0:
            return None
        score = self.curve["score"].to_numpy()
        # A score threshold keeps all tied picks: only the last of a run of equal scores counts.
        ends = np.append(score[:-1] != score[1:], True)
        f1 = np.where(ends, self.curve["f1"].to_numpy(), -1.0)
        return int(np.argmax(f1))

    @property
    def best_f1(self) -> float:
        """Highest F1 along the ranked curve (``nan`` without picks or reference particles)."""
        row = self._best_row()
        return float("nan") if row is None else float(self.curve["f1"].iat[row])

    @property
    def best_k(self) -> int:
        """Number of top picks (pooled) that achieves `best_f1` (0 when undefined)."""
        row = self._best_row()
        return 0 if row is None else row + 1

    @property
    def best_threshold(self) -> float | None:
        """Score threshold (keep score >= it) achieving `best_f1`; None without scores."""
        row = self._best_row()
        value = np.nan if row is None else float(self.curve["score"].iat[row])
        return None if np.isnan(value) else value

    def at_threshold(self, threshold: float) -> dict:
        """Ranked-matching precision, recall and F1 of the picks with ``score >= threshold``.

        Parameters
        ----------
        threshold : float
            Score threshold.

        Returns
        -------
        dict
            ``threshold``, ``n_picks``, ``tp``, ``precision``, ``recall``, ``f1``.
        """
        k = int(np.count_nonzero(self.curve["score"].to_numpy() >= threshold))
        tp = int(self.curve["tp"].iat[k - 1]) if k else 0
        n_ref = self.overall["n_reference"]
        return {"threshold": float(threshold), "n_picks": k, "tp": tp, "precision": _ratio(tp, k),
                "recall": _ratio(tp, n_ref), "f1": _ratio(2 * tp, k + n_ref)}

    def summary(self) -> dict:
        """The headline numbers: overall totals, average precision, best F1 and its threshold."""
        return {**self.overall, "average_precision": self.average_precision,
                "best_f1": self.best_f1, "best_k": self.best_k,
                "best_threshold": self.best_threshold, "box": self.box, "radius": self.radius}

    def to_dict(self, curve: bool = True) -> dict:
        """JSON-able dictionary (plain Python types; NaN as None) of the report.

        Parameters
        ----------
        curve : bool
            Include the ranked curve (one entry per pick; can be long).
        """
        out = {"summary": self.summary(),
               "per_micrograph": self.per_micrograph.to_dict(orient="records")}
        if curve:
            out["curve"] = {name: self.curve[name].to_numpy() for name in self.curve.columns}
        return _plain(out)

    def table(self) -> str:
        """A readable text table: one row per micrograph, a total row and the ranked figures."""
        total = pd.DataFrame([{"micrograph": "ALL", **self.overall}])[self.per_micrograph.columns]
        rows = pd.concat([self.per_micrograph, total], ignore_index=True) if len(
            self.per_micrograph) else total
        text = rows.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-")
        thr = self.best_threshold
        return (f"{text}\nmatch: centres closer than {self.radius:g} x box ({self.box:g} px)\n"
                f"average precision {self.average_precision:.3f}; best F1 {self.best_f1:.3f} "
                f"with the top {self.best_k} picks"
                + ("" if thr is None else f" (score >= {thr:.3f})"))


def evaluate(
    picks_by_mic: dict[str, pd.DataFrame],
    refs_by_mic: dict[str, pd.DataFrame],
    box: float,
    radius: float = 0.2,
) -> EvaluationReport:
    """Evaluate picks against reference particles over several micrographs.

    Parameters
    ----------
    picks_by_mic, refs_by_mic : dict of str to pandas.DataFrame
        Per micrograph stem, centres in columns ``x``, ``y`` (picks may have ``score``). A
        micrograph with picks but no reference entry counts all its picks as FP; one with a
        reference but no picks counts all its particles as FN.
    box : float
        Box size in micrograph pixels.
    radius : float
        Match radius as a fraction of the box.

    Returns
    -------
    EvaluationReport
        Per-micrograph rows and micro-averaged totals (optimal matching), and the ranked curve,
        average precision and best F1 with its threshold (ranked matching, pooled by score).
    """
    _check_box(box, radius)
    rows, matches, ranked, distances = [], {}, [], []
    for name in sorted(set(picks_by_mic) | set(refs_by_mic)):
        picks, refs = picks_by_mic.get(name), refs_by_mic.get(name)
        m = matches[name] = match_picks(picks, refs, box, radius)
        distances.append(m.distances)
        rows.append({"micrograph": name, "n_picks": m.n_picks, "n_reference": m.n_reference,
                     **{key: getattr(m, key) for key in _COUNTS}})
        order = rank_order(picks)
        has_score = picks is not None and "score" in picks.columns
        score = picks["score"].to_numpy(dtype=float)[order] if has_score else np.nan
        hits = ranked_matches(picks, refs, box, radius)
        ranked.append(pd.DataFrame({"micrograph": name, "row": order, "rank": np.arange(order.size),
                                    "score": score, "tp": hits}))
    per_mic = pd.DataFrame(rows, columns=["micrograph", "n_picks", "n_reference", *_COUNTS])
    n_picks, n_ref = int(per_mic["n_picks"].sum()), int(per_mic["n_reference"].sum())
    tp = int(per_mic["tp"].sum())
    dist = np.concatenate(distances) if distances else np.zeros(0)
    overall = {"n_micrographs": len(rows), "n_picks": n_picks, "n_reference": n_ref, "tp": tp,
               "fp": n_picks - tp, "fn": n_ref - tp, "precision": _ratio(tp, n_picks),
               "recall": _ratio(tp, n_ref), "f1": _ratio(2 * tp, n_picks + n_ref),
               "centre_error": float(dist.mean() / box) if dist.size else float("nan")}
    pooled = pd.concat(ranked, ignore_index=True) if ranked else pd.DataFrame(
        {"micrograph": [], "row": [], "rank": [], "score": [], "tp": []})
    key = np.nan_to_num(pooled["score"].to_numpy(dtype=float), nan=-np.inf)
    pooled = pooled.iloc[np.lexsort((pooled["rank"].to_numpy(), -key))].reset_index(drop=True)
    k = np.arange(1, len(pooled) + 1)
    cum = np.cumsum(pooled["tp"].to_numpy(dtype=int))
    curve = pd.DataFrame({"k": k, "score": pooled["score"].to_numpy(dtype=float), "tp": cum,
                          "precision": cum / k,
                          "recall": cum / n_ref if n_ref else np.full(k.size, np.nan),
                          "f1": 2 * cum / (k + n_ref)})
    report = EvaluationReport(float(box), float(radius), per_mic, overall, curve, pooled, matches)
    logger.info("evaluated %d micrographs: precision %.3f recall %.3f AP %.3f", len(rows),
                overall["precision"], overall["recall"], report.average_precision)
    return report


def curve_by_top_n(report: EvaluationReport, n_values=None) -> pd.DataFrame:
    """Precision and recall when each micrograph keeps only its top ``n`` picks (paper Fig. 2c-e).

    Parameters
    ----------
    report : EvaluationReport
        From `evaluate`.
    n_values : sequence of int, optional
        Numbers of top picks per micrograph (>= 1); default 1 to the largest pick count.

    Returns
    -------
    pandas.DataFrame
        ``n``, ``n_selected`` (picks kept over all micrographs), ``tp``, ``precision`` and
        ``recall`` (micro-averaged; ranked matching).
    """
    ranks = report.ranked_picks["rank"].to_numpy(dtype=int)
    hits = report.ranked_picks["tp"].to_numpy(dtype=float)
    longest = int(ranks.max()) + 1 if ranks.size else 0
    n = np.arange(1, longest + 1) if n_values is None else np.asarray(n_values, dtype=int).ravel()
    if n.size and n.min() < 1:
        raise DeepPickerError(f"numbers of top picks must be >= 1, got {n.min()}")
    kept = np.concatenate([[0], np.cumsum(np.bincount(ranks, minlength=longest))])
    tps = np.concatenate([[0], np.cumsum(np.bincount(ranks, weights=hits, minlength=longest))])
    idx = np.minimum(n, longest)
    sel, tp = kept[idx].astype(int), tps[idx].astype(int)
    n_ref = report.overall["n_reference"]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(sel > 0, tp / np.maximum(sel, 1), np.nan)
    recall = tp / n_ref if n_ref else np.full(n.size, np.nan)
    return pd.DataFrame({"n": n, "n_selected": sel, "tp": tp, "precision": precision,
                         "recall": recall})


def noise_score_summary(scores, threshold: float = 0.5) -> dict:
    """Summarise scores on pure noise (the "Einstein from noise" check).

    Parameters
    ----------
    scores : array-like or object with a ``data`` array (e.g. a score map)
        Scores in 0-1; NaN values are ignored.
    threshold : float
        The score above which a position would be picked.

    Returns
    -------
    dict
        ``n``, ``max``, ``p99`` (99th percentile), ``fraction_above`` (strictly above
        `threshold`) and ``threshold``; values are ``nan`` when there is no finite score.
    """
    values = np.asarray(getattr(scores, "data", scores), dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        nan = float("nan")
        return {"n": 0, "max": nan, "p99": nan, "fraction_above": nan,
                "threshold": float(threshold)}
    return {"n": int(values.size), "max": float(values.max()),
            "p99": float(np.percentile(values, 99)),
            "fraction_above": float(np.mean(values > threshold)), "threshold": float(threshold)}


def plot_report(report: EvaluationReport, path, title: str | None = None) -> Path:
    """Save a PNG: precision and recall vs number of top picks, and the precision-recall curve.

    Parameters
    ----------
    report : EvaluationReport
        From `evaluate`.
    path : str or pathlib.Path
        Output PNG, written atomically.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .io import atomic_write

    path = Path(path)
    curve, n_ref = report.curve, report.overall["n_reference"]
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(curve["k"], curve["precision"], label="precision")
    left.plot(curve["k"], curve["recall"], label="recall")
    if n_ref:
        left.axvline(n_ref, color="grey", linestyle="--", label=f"{n_ref} reference particles")
    left.set(xlabel="number of top picks", ylabel="fraction", ylim=(0, 1.02),
             title="precision and recall vs top picks")
    left.legend(loc="lower right")
    right.plot(curve["recall"], curve["precision"], label=f"AP = {report.average_precision:.3f}")
    if report.best_k:
        best = curve.iloc[report.best_k - 1]
        thr = report.best_threshold
        right.plot(best["recall"], best["precision"], "o", color="C3",
                   label=f"best F1 = {report.best_f1:.3f}"
                   + ("" if thr is None else f" (score >= {thr:.2f})"))
    right.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
              title="precision-recall (ranked by score)")
    right.legend(loc="lower left")
    if title:
        fig.suptitle(title)
    with atomic_write(path, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    logger.info("wrote evaluation plot %s", path)
    return path
