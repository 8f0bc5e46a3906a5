"""Matching picks with reference particles: the optimal assignment and the ranked (greedy) one.

Private helper of `napari_deeppicker.core.evaluation`, which re-exports the public names and
documents the conventions; split off to keep both modules short.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching
from scipy.spatial import cKDTree

from .errors import BoxSizeError, CoordinatesError, DeepPickerError

_EMPTY_INT = np.zeros(0, dtype=np.intp)


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else float("nan")


@dataclass
class MatchResult:
    """Optimal one-to-one matching of picks with reference particles.

    Indices are positions (0-based rows) in the tables given to `match_picks`, not index labels.
    """

    pick_index: np.ndarray  # matched pairs: pick rows ...
    ref_index: np.ndarray  # ... and the reference rows they match
    distances: np.ndarray  # centre distances of the pairs, in pixels
    n_picks: int
    n_reference: int
    box: float
    pick_label: np.ndarray = field(repr=False)  # "TP" / "FP" per pick, for colouring
    ref_label: np.ndarray = field(repr=False)  # "matched" / "missed" per reference particle

    @property
    def tp(self) -> int:
        return int(self.pick_index.size)

    @property
    def fp(self) -> int:
        return self.n_picks - self.tp

    @property
    def fn(self) -> int:
        return self.n_reference - self.tp

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.n_picks)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.n_reference)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, self.n_picks + self.n_reference)

    @property
    def centre_error(self) -> float:
        """Mean centre distance of the matched pairs / box (``nan`` without matches)."""
        return float(self.distances.mean() / self.box) if self.tp else float("nan")


def _centres(df: pd.DataFrame | None, what: str) -> np.ndarray:
    if df is None or len(df) == 0:
        return np.zeros((0, 2))
    if not {"x", "y"} <= set(getattr(df, "columns", ())):
        raise CoordinatesError(f"{what}: a table with columns 'x' and 'y' is required")
    xy = df[["x", "y"]].to_numpy(dtype=float)
    if not np.isfinite(xy).all():
        raise CoordinatesError(f"{what}: coordinates contain NaN or infinite values")
    return xy


def _check_box(box: float, radius: float) -> float:
    if not np.isfinite(box) or box <= 0:
        raise BoxSizeError(f"box size must be positive, got {box}")
    if not np.isfinite(radius) or radius <= 0:
        raise DeepPickerError(f"matching radius must be positive, got {radius}")
    return float(radius) * float(box)


def _edges(picks: np.ndarray, refs: np.ndarray, r: float):
    """Pairs (pick i, reference j, distance d) with d < r, found with k-d trees."""
    if len(picks) == 0 or len(refs) == 0:
        return _EMPTY_INT, _EMPTY_INT, np.zeros(0)
    e = cKDTree(picks).sparse_distance_matrix(cKDTree(refs), r, output_type="ndarray")
    keep = e["v"] < r  # the tree keeps d <= r; a pair at exactly r is not a match
    return e["i"][keep].astype(np.intp), e["j"][keep].astype(np.intp), e["v"][keep]


def _optimal_pairs(i, j, d, n: int, m: int, r: float):
    """Maximum-cardinality, then minimum-distance, matching on the sparse graph of edges.

    Square graph rows = picks + reference dummies, columns = references + pick dummies: edge
    (pick, ref) costs 1 + d / r, (ref dummy, pick dummy) costs 1 for every edge, and leaving an
    item unmatched (item -> own dummy) costs ``2 * (s + 1)`` where ``s`` is the size of the smaller
    side of its connected component; an augmenting path of a component changes the pair costs by
    less than ``s + 3``, so a matching with one more pair is always cheaper. Weights are never 0
    (scipy drops explicit zeros), and keeping the penalty small per component keeps it fast.
    """
    adjacency = sparse.coo_matrix((np.ones(i.size), (i, n + j)), shape=(n + m, n + m))
    n_comp, comp = connected_components(adjacency, directed=False)
    side_p = np.bincount(comp[:n], minlength=n_comp)
    side_r = np.bincount(comp[n:], minlength=n_comp)
    penalty = 2.0 * (np.minimum(side_p, side_r) + 1)
    rows = np.concatenate([i, np.arange(n), n + np.arange(m), n + j])
    cols = np.concatenate([j, m + np.arange(n), np.arange(m), m + i])
    weights = np.concatenate([1.0 + d / r, penalty[comp[:n]], penalty[comp[n:]], np.ones(i.size)])
    graph = sparse.csr_matrix((weights, (rows, cols)), shape=(n + m, m + n))
    row, col = min_weight_full_bipartite_matching(graph)
    real = (row < n) & (col < m)
    order = np.argsort(row[real], kind="stable")
    return row[real][order].astype(np.intp), col[real][order].astype(np.intp)


def match_picks(
    picks: pd.DataFrame, reference: pd.DataFrame, box: float, radius: float = 0.2
) -> MatchResult:
    """Match picks one-to-one with reference particles (the headline evaluation).

    Parameters
    ----------
    picks, reference : pandas.DataFrame
        Particle centres in columns ``x`` and ``y`` (pixels); ``None`` or an empty table is allowed.
    box : float
        Box size in micrograph pixels.
    radius : float
        A pick and a reference particle can match when their centres are closer than
        ``radius * box`` (strictly).

    Returns
    -------
    MatchResult
        The assignment with the most matches and, among those, the smallest total distance;
        ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``, ``centre_error`` and per-point
        labels. Undefined ratios are ``nan`` (see the module docstring).
    """
    r = _check_box(box, radius)
    p, q = _centres(picks, "picks"), _centres(reference, "reference")
    i, j, d = _edges(p, q, r)
    pi, ri = _optimal_pairs(i, j, d, len(p), len(q), r) if i.size else (_EMPTY_INT, _EMPTY_INT)
    pick_label = np.full(len(p), "FP", dtype=object)
    pick_label[pi] = "TP"
    ref_label = np.full(len(q), "missed", dtype=object)
    ref_label[ri] = "matched"
    dist = np.hypot(*(p[pi] - q[ri]).T) if pi.size else np.zeros(0)
    return MatchResult(pi, ri, dist, len(p), len(q), float(box), pick_label, ref_label)


def rank_order(picks: pd.DataFrame | None) -> np.ndarray:
    """Row positions of picks by decreasing score.

    Parameters
    ----------
    picks : pandas.DataFrame or None
        Picks, optionally with a ``score`` column.

    Returns
    -------
    numpy.ndarray
        Row positions, highest score first; the sort is stable, rows with a NaN score come last,
        and without a ``score`` column the table order is kept.
    """
    if picks is None or len(picks) == 0:
        return _EMPTY_INT
    if "score" not in picks.columns:
        return np.arange(len(picks))
    score = picks["score"].to_numpy(dtype=float)
    return np.argsort(-np.nan_to_num(score, nan=-np.inf), kind="stable")


def ranked_matches(
    picks: pd.DataFrame | None, reference: pd.DataFrame | None, box: float, radius: float = 0.2
) -> np.ndarray:
    """Greedy matching in rank order, for ranked curves and average precision.

    Each pick, from the highest score down (`rank_order`), takes the nearest reference particle
    closer than ``radius * box`` that no higher-ranked pick has taken (ties in distance go to the
    lower reference row).

    Parameters
    ----------
    picks, reference : pandas.DataFrame or None
        Centres in columns ``x`` and ``y``; picks may have ``score``.
    box : float
        Box size in micrograph pixels.
    radius : float
        Match radius as a fraction of the box.

    Returns
    -------
    numpy.ndarray of bool
        For each pick in rank order (``picks.iloc[rank_order(picks)]``), whether it is a TP.
    """
    r = _check_box(box, radius)
    p, q = _centres(picks, "picks"), _centres(reference, "reference")
    order = rank_order(picks)
    rank = np.empty(len(p), dtype=np.intp)
    rank[order] = np.arange(len(p))
    i, j, d = _edges(p, q, r)
    hit = np.zeros(len(p), dtype=bool)
    taken = np.zeros(len(q), dtype=bool)
    for e in np.lexsort((j, d, rank[i])):
        if not hit[rank[i[e]]] and not taken[j[e]]:
            hit[rank[i[e]]] = taken[j[e]] = True
    return hit
