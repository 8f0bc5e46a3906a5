"""Tests of core.evaluation on hand-built cases whose answers are worked out in the comments."""

import json
import math
import struct

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial import distance_matrix

from napari_deeppicker.core.errors import BoxSizeError, CoordinatesError, DeepPickerError
from napari_deeppicker.core.evaluation import (
    curve_by_top_n,
    evaluate,
    match_picks,
    noise_score_summary,
    plot_report,
    rank_order,
    ranked_matches,
)


def xy(points, scores=None):
    df = pd.DataFrame(np.asarray(points, dtype=float).reshape(-1, 2), columns=["x", "y"])
    if scores is not None:
        df["score"] = np.asarray(scores, dtype=float)
    return df


def test_exact_matches():
    refs = xy([[100, 100], [300, 120], [500, 400]])
    m = match_picks(refs.copy(), refs, box=50)
    assert (m.tp, m.fp, m.fn) == (3, 0, 0)
    assert (m.precision, m.recall, m.f1, m.centre_error) == (1.0, 1.0, 1.0, 0.0)
    assert m.pick_index.tolist() == m.ref_index.tolist() == [0, 1, 2]
    assert list(m.pick_label) == ["TP"] * 3 and list(m.ref_label) == ["matched"] * 3


def test_match_radius_is_strict():
    refs = xy([[500, 500]])
    assert match_picks(xy([[519, 500]]), refs, box=100).tp == 1  # 0.19 x box
    assert match_picks(xy([[521, 500]]), refs, box=100).tp == 0  # 0.21 x box
    # radius 0.25 x box 40 = exactly 10 px: a pick at exactly 10 px is not a match.
    assert match_picks(xy([[506, 508]]), refs, box=40, radius=0.25).tp == 0
    assert match_picks(xy([[506, 507.9]]), refs, box=40, radius=0.25).tp == 1


def test_two_picks_compete_for_one_reference():
    m = match_picks(xy([[105, 100], [102, 100]]), xy([[100, 100]]), box=50)
    assert (m.tp, m.fp, m.fn) == (1, 1, 0)
    assert m.pick_index.tolist() == [1] and m.ref_index.tolist() == [0]
    assert list(m.pick_label) == ["FP", "TP"]
    assert m.precision == 0.5 and m.recall == 1.0 and m.f1 == pytest.approx(2 / 3)
    assert m.centre_error == pytest.approx(2 / 50)


def test_optimal_assignment_beats_greedy_nearest():
    # r = 0.2 x 40 = 8 px. P1 is 4 px from A and 6 px from B; P2 is 5 px from A, 15 px from B.
    # Greedy from P1 takes A and leaves P2 nothing; the optimal assignment is P1-B, P2-A.
    refs = xy([[0, 0], [10, 0]])
    picks = xy([[4, 0], [-5, 0]], scores=[0.9, 0.8])
    m = match_picks(picks, refs, box=40)
    assert m.tp == 2 and m.fn == 0
    assert dict(zip(m.pick_index.tolist(), m.ref_index.tolist())) == {0: 1, 1: 0}
    assert sorted(m.distances.tolist()) == [5.0, 6.0]
    assert m.centre_error == pytest.approx(5.5 / 40)
    # The ranked (greedy, score order) matching makes the choice the brief documents.
    assert ranked_matches(picks, refs, box=40).tolist() == [True, False]
    swapped = picks.assign(score=[0.1, 0.8])
    assert ranked_matches(swapped, refs, box=40).tolist() == [True, True]


def test_minimum_total_distance_among_maximum_matchings():
    # Both pairings match 2; P-A + Q-B (2 + 2 px) beats P-B + Q-A (4 + 4 px).
    m = match_picks(xy([[2, 0], [4, 0]]), xy([[0, 0], [6, 0]]), box=40)
    assert m.pick_index.tolist() == [0, 1] and m.ref_index.tolist() == [0, 1]
    assert m.distances.tolist() == [2.0, 2.0]


def test_matches_dense_assignment_on_random_cases():
    rng = np.random.default_rng(1)
    for case in range(60):
        picks = rng.uniform(0, 100, (rng.integers(1, 40), 2))
        refs = rng.uniform(0, 100, (rng.integers(1, 40), 2))
        if case % 3 == 0:
            picks, refs = np.round(picks / 10) * 10, np.round(refs / 10) * 10  # ties and zeros
        box = rng.uniform(20, 80)
        r = 0.2 * box
        dist = distance_matrix(picks, refs)
        big = 10 * r * (min(dist.shape) + 1)
        rows, cols = linear_sum_assignment(np.where(dist < r, dist, big))
        ok = dist[rows, cols] < r
        m = match_picks(xy(picks), xy(refs), box)
        assert m.tp == ok.sum()
        assert m.distances.sum() == pytest.approx(dist[rows[ok], cols[ok]].sum())
        assert np.all(m.distances < r)
        assert len(set(m.pick_index)) == len(set(m.ref_index)) == m.tp


def test_empty_inputs():
    refs = xy([[10, 10], [50, 50], [90, 90]])
    no_picks = match_picks(xy(np.zeros((0, 2))), refs, box=20)
    assert (no_picks.tp, no_picks.fp, no_picks.fn) == (0, 0, 3)
    assert math.isnan(no_picks.precision) and no_picks.recall == 0.0 and no_picks.f1 == 0.0
    assert math.isnan(no_picks.centre_error) and list(no_picks.ref_label) == ["missed"] * 3
    no_refs = match_picks(xy([[1, 1], [2, 2]]), None, box=20)
    assert (no_refs.tp, no_refs.fp, no_refs.fn) == (0, 2, 0)
    assert no_refs.precision == 0.0 and math.isnan(no_refs.recall) and no_refs.f1 == 0.0
    assert list(no_refs.pick_label) == ["FP", "FP"]
    nothing = match_picks(None, pd.DataFrame(), box=20)
    assert nothing.tp == 0 and math.isnan(nothing.f1) and math.isnan(nothing.precision)


def test_bad_input_raises():
    with pytest.raises(BoxSizeError):
        match_picks(xy([[1, 1]]), xy([[1, 1]]), box=0)
    with pytest.raises(DeepPickerError):
        match_picks(xy([[1, 1]]), xy([[1, 1]]), box=10, radius=-1)
    with pytest.raises(CoordinatesError, match="picks"):
        match_picks(pd.DataFrame({"a": [1.0]}), xy([[1, 1]]), box=10)
    with pytest.raises(CoordinatesError, match="reference"):
        match_picks(xy([[1, 1]]), xy([[np.nan, 1]]), box=10)


def test_rank_order():
    assert rank_order(xy([[0, 0]] * 4, scores=[0.2, np.nan, 0.9, 0.2])).tolist() == [2, 0, 3, 1]
    assert rank_order(xy([[0, 0]] * 3)).tolist() == [0, 1, 2]


def _ranked_case(outcomes, scores, n_missed=0):
    """Picks whose ranked outcome is `outcomes` (True = TP) plus `n_missed` unpicked references."""
    refs, picks = [], []
    for index, hit in enumerate(outcomes):
        centre = [100.0 * (index + 1), 100.0]
        picks.append(centre)
        if hit:
            refs.append(centre)
    refs += [[100.0 * (index + 1), 900.0] for index in range(n_missed)]
    return {"m": xy(picks, scores)}, {"m": xy(refs)}


def test_average_precision_perfect_ranking():
    picks, refs = _ranked_case([True, True, True, False, False], [0.9, 0.8, 0.7, 0.2, 0.1])
    report = evaluate(picks, refs, box=50)
    assert report.average_precision == 1.0
    assert report.best_f1 == 1.0 and report.best_k == 3 and report.best_threshold == 0.7


def test_average_precision_and_best_f1_known_ranking():
    # TP TP FP TP FP FP with 3 references: AP = (1/1 + 2/2 + 3/4) / 3; F1 at k = 4 is 6/7.
    picks, refs = _ranked_case([True, True, False, True, False, False],
                               [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    report = evaluate(picks, refs, box=50)
    assert report.average_precision == pytest.approx((1 + 1 + 0.75) / 3)
    assert report.best_f1 == pytest.approx(6 / 7)
    assert report.best_k == 4 and report.best_threshold == pytest.approx(0.6)
    assert report.curve["precision"].tolist() == pytest.approx([1, 1, 2 / 3, 3 / 4, 3 / 5, 3 / 6])
    assert report.curve["recall"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    at = report.at_threshold(0.65)
    assert (at["n_picks"], at["tp"]) == (3, 2) and at["precision"] == pytest.approx(2 / 3)
    # Missed references lower the AP: TP FP TP FP TP with 4 references.
    picks, refs = _ranked_case([True, False, True, False, True], [5, 4, 3, 2, 1], n_missed=1)
    assert evaluate(picks, refs, box=50).average_precision == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)


def test_best_threshold_keeps_tied_scores_together():
    # A TP and an FP share the score 0.9: no threshold keeps only the TP, so best F1 is 2/3.
    picks, refs = _ranked_case([True, False], [0.9, 0.9])
    report = evaluate(picks, refs, box=50)
    assert report.best_k == 2 and report.best_f1 == pytest.approx(2 / 3)
    assert report.best_threshold == 0.9


def _three_micrographs():
    picks = {"a": xy([[100, 100], [300, 300]], [0.9, 0.8]), "b": xy([[50, 50]], [0.95])}
    refs = {"a": xy([[102, 100], [300, 303]]), "c": xy([[10, 10], [20, 40], [60, 60]])}
    return picks, refs


def test_evaluate_across_micrographs_with_missing_keys():
    report = evaluate(*_three_micrographs(), box=50)
    rows = report.per_micrograph.set_index("micrograph")
    assert rows.index.tolist() == ["a", "b", "c"]
    assert rows.loc["a", ["tp", "fp", "fn"]].tolist() == [2, 0, 0]
    assert rows.loc["b", ["tp", "fp", "fn"]].tolist() == [0, 1, 0]
    assert rows.loc["c", ["tp", "fp", "fn"]].tolist() == [0, 0, 3]
    assert rows.loc["b", "precision"] == 0 and math.isnan(rows.loc["b", "recall"])
    assert math.isnan(rows.loc["c", "precision"]) and rows.loc["c", "recall"] == 0
    assert rows.loc["a", "centre_error"] == pytest.approx((2 + 3) / 2 / 50)
    total = report.overall
    assert (total["n_picks"], total["n_reference"], total["tp"]) == (3, 5, 2)
    assert total["precision"] == pytest.approx(2 / 3) and total["recall"] == pytest.approx(0.4)
    assert total["f1"] == pytest.approx(0.5)
    # Pooled by score: b (0.95, FP), a (0.9, TP), a (0.8, TP).
    assert report.ranked_picks["micrograph"].tolist() == ["b", "a", "a"]
    assert report.curve["tp"].tolist() == [0, 1, 2]
    assert report.average_precision == pytest.approx((1 / 2 + 2 / 3) / 5)
    assert list(report.matches["a"].pick_label) == ["TP", "TP"]


def test_to_dict_is_json_and_table_is_readable():
    report = evaluate(*_three_micrographs(), box=50)
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["summary"]["tp"] == 2 and data["summary"]["precision"] == pytest.approx(2 / 3)
    assert data["summary"]["best_threshold"] == pytest.approx(0.8)
    by_name = {row["micrograph"]: row for row in data["per_micrograph"]}
    assert by_name["b"]["recall"] is None and by_name["c"]["fn"] == 3
    assert data["curve"]["k"] == [1, 2, 3]
    assert "curve" not in report.to_dict(curve=False)
    text = report.table()
    assert "ALL" in text and all(name in text.split() for name in "abc")
    assert "average precision 0.233" in text


def test_evaluate_without_scores_interleaves_micrographs_by_rank():
    picks = {"a": xy([[0, 0], [100, 0]]), "b": xy([[0, 0], [100, 0]])}
    refs = {"a": xy([[100, 0]]), "b": xy([[0, 0]])}
    report = evaluate(picks, refs, box=50)
    assert report.ranked_picks["micrograph"].tolist() == ["a", "b", "a", "b"]
    assert report.ranked_picks["tp"].tolist() == [False, True, True, False]
    assert report.best_threshold is None and report.best_k == 3
    assert report.best_f1 == pytest.approx(4 / 5)


def test_evaluate_nothing():
    report = evaluate({}, {}, box=50)
    assert report.overall["n_micrographs"] == 0 and len(report.curve) == 0
    assert math.isnan(report.average_precision) and math.isnan(report.best_f1)
    json.dumps(report.to_dict(), allow_nan=False)


def test_curve_by_top_n():
    # a: TP then FP (1 reference); b: FP, TP, TP (3 references).
    picks = {"a": xy([[0, 0], [200, 0]], [0.9, 0.1]),
             "b": xy([[0, 0], [200, 0], [400, 0]], [0.9, 0.8, 0.7])}
    refs = {"a": xy([[0, 0]]), "b": xy([[200, 0], [400, 0], [600, 0]])}
    table = curve_by_top_n(evaluate(picks, refs, box=50), [1, 2, 3, 5])
    assert table["n_selected"].tolist() == [2, 4, 5, 5]
    assert table["tp"].tolist() == [1, 2, 3, 3]
    assert table["precision"].tolist() == pytest.approx([0.5, 0.5, 0.6, 0.6])
    assert table["recall"].tolist() == pytest.approx([0.25, 0.5, 0.75, 0.75])
    assert curve_by_top_n(evaluate(picks, refs, box=50))["n"].tolist() == [1, 2, 3]
    with pytest.raises(DeepPickerError):
        curve_by_top_n(evaluate(picks, refs, box=50), [0])


def test_noise_score_summary():
    class Map:
        data = np.append(np.arange(100) / 100, np.nan).reshape(1, -1)

    summary = noise_score_summary(Map())
    assert summary["n"] == 100 and summary["max"] == pytest.approx(0.99)
    assert summary["p99"] == pytest.approx(0.9801)
    assert summary["fraction_above"] == pytest.approx(0.49)
    assert noise_score_summary(np.zeros(10), threshold=0.0)["fraction_above"] == 0.0
    assert noise_score_summary([])["n"] == 0 and math.isnan(noise_score_summary([])["max"])


def test_plot_report_writes_png(tmp_path):
    picks, refs = _ranked_case([True, True, False, True, False], [0.9, 0.8, 0.7, 0.6, 0.5], 1)
    path = plot_report(evaluate(picks, refs, box=50), tmp_path / "report.png", title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1000, 420) and len(data) > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["report.png"]  # no temporary file left


def test_large_sparse_matching():
    # 20,000 references on a 50 px grid (r = 10 px); 16,000 picks jittered by < 6 px, 4,000 picks
    # half-way between grid points (35 px from any reference). A dense matrix would be 3.2 GB.
    rng = np.random.default_rng(0)
    gx, gy = np.meshgrid(np.arange(200) * 50.0, np.arange(100) * 50.0)
    refs = np.column_stack([gx.ravel(), gy.ravel()])
    angle, length = rng.uniform(0, 2 * np.pi, 16_000), rng.uniform(0, 6, 16_000)
    picks = refs.copy()
    picks[:16_000] += np.column_stack([np.cos(angle), np.sin(angle)]) * length[:, None]
    picks[16_000:] += 25
    m = match_picks(xy(picks), xy(refs), box=50)
    assert (m.tp, m.fp, m.fn) == (16_000, 4_000, 4_000)
    assert np.array_equal(m.pick_index, m.ref_index)
    assert m.centre_error == pytest.approx(length.mean() / 50)
    scores = rng.uniform(0, 1, 20_000)
    report = evaluate({"g": xy(picks, scores)}, {"g": xy(refs)}, box=50)
    assert report.curve["tp"].iat[-1] == 16_000 and report.overall["tp"] == 16_000
