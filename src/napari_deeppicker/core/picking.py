"""Picking: dense score map, ice cleaning, peak filtering, outlier removal, sorting.

The score map is computed by running the network fully convolutionally over the rescaled
micrograph (``DeepPickerNet.dense``), tile by tile so that memory stays bounded on large images;
every value equals what the classifier gives on the 64 x 64 window at that position.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from napari_deeppicker.core.nullcheck import compare_to_null, null_prepared
from napari_deeppicker.core.preprocess import TARGET_BOX, PreparedImage, prepare_micrograph

log = logging.getLogger(__name__)

_HALF = (TARGET_BOX - 1) / 2.0
_TILE = {4: 2048, 2: 1024, 1: 512}  # rescaled pixels per tile side: bounds activation memory


@dataclass
class PickConfig:
    """Settings of the picking stage (distances are fractions of the box).

    Parameters
    ----------
    threshold : float or "auto"
        Keep picks scoring above this; "auto": chosen per micrograph from its own candidate
        scores by :func:`pick_micrograph` (see :mod:`napari_deeppicker.core.calibration`).
    top_n : int, optional
        Keep at most this many picks per micrograph (after the threshold).
    min_distance : float
        Picks are at least ``min_distance * box`` apart (the paper's 0.8-box window).
    ice_factor : float
        Connected regions of score > ``region_threshold`` larger than ``ice_factor`` times the
        mean region size (and than ``ice_min_area`` boxes) are ice or carbon: dropped.
    region_threshold : float
        Score level defining the regions for the ice test.
    ice_min_area : float
        A region must also cover more than this many box areas to count as ice.
    outlier_sigma, max_outlier_fraction : float
        Drop a pick when more than ``max_outlier_fraction`` of its box pixels lie beyond
        ``outlier_sigma`` robust standard deviations (hot pixels, ice, carbon edges).
    edge : float
        Picks keep ``edge * box`` from the image border (0.5: the whole box is inside).
    step : int
        Score-map step in pixels of the rescaled image (box = 64 px): 4, 2 or 1.
    null_check : bool
        Compare the candidates with those of the micrograph's phase-randomised null and keep no
        pick on a micrograph the null explains (:mod:`napari_deeppicker.core.nullcheck`).
    null_top, null_margin, null_alpha : int, float, float
        The rule of :func:`~napari_deeppicker.core.nullcheck.compare_to_null`.
    null_seed : int
        Seed of the null's random phases.
    """

    threshold: float | str = 0.5
    top_n: int | None = None
    min_distance: float = 0.4
    ice_factor: float = 4.0
    region_threshold: float = 0.5
    ice_min_area: float = 2.0
    outlier_sigma: float = 3.0
    max_outlier_fraction: float = 0.25
    edge: float = 0.5
    step: int = 4
    null_check: bool = True
    null_top: int = 10
    null_margin: float = 1.0
    null_alpha: float = 0.05
    null_seed: int = 0

    def to_dict(self) -> dict:
        """JSON-able representation (provenance)."""
        return asdict(self)


@dataclass
class ScoreMap:
    """Particle probabilities on a regular grid over the micrograph.

    ``data[i, j]`` is the score of the box centred on micrograph position
    ``(origin[0] + i * spacing[0], origin[1] + j * spacing[1])`` (row, col, in pixels).
    """

    data: np.ndarray
    origin: tuple[float, float]
    spacing: tuple[float, float]

    def positions(self, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map indices (may be fractional) -> micrograph (row, col)."""
        return self.origin[0] + np.asarray(i) * self.spacing[0], self.origin[1] + np.asarray(j) * self.spacing[1]


def _dense_tiled(net, image: np.ndarray, step: int, device) -> np.ndarray:
    """Dense probabilities of ``image`` tile by tile (tiles overlap by 64 - step pixels)."""
    import torch

    rows, cols = image.shape
    out_h, out_w = (rows - TARGET_BOX) // step + 1, (cols - TARGET_BOX) // step + 1
    out = np.empty((out_h, out_w), dtype=np.float32)
    tile_out = max(1, (_TILE[step] - TARGET_BOX) // step + 1)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    for i0 in range(0, out_h, tile_out):
        i1 = min(out_h, i0 + tile_out)
        for j0 in range(0, out_w, tile_out):
            j1 = min(out_w, j0 + tile_out)
            tile = tensor[step * i0 : step * (i1 - 1) + TARGET_BOX, step * j0 : step * (j1 - 1) + TARGET_BOX]
            probs = net.dense(tile[None, None].to(device), step)[0]
            out[i0:i1, j0:j1] = probs.float().cpu().numpy()
    return out


def score_prepared(model, prepared: PreparedImage, step: int = 4, device=None, pad: int = 0) -> ScoreMap:
    """Score map of an already prepared (rescaled) image; ``pad`` rescaled px of reflection."""
    import torch

    image = prepared.data
    if pad:
        image = np.pad(image, pad, mode="reflect")
    if min(image.shape) < TARGET_BOX:
        image = np.pad(image, [(0, max(0, TARGET_BOX - n)) for n in image.shape], mode="reflect")
    net = model.net
    device = device or model.device
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            data = _dense_tiled(net.to(device), image, step, device)
    finally:
        net.train(was_training)
    sr, sc = prepared.scale
    origin = ((_HALF - pad) / sr, (_HALF - pad) / sc)
    return ScoreMap(data, origin, (step / sr, step / sc))


def score_micrograph(model, image: np.ndarray, box: float, *, config: PickConfig | None = None, device=None) -> ScoreMap:
    """Dense score map of a micrograph for particles of ``box`` pixels.

    Parameters
    ----------
    model : PickerModel
        The trained network and its preprocessing settings.
    image : ndarray
        2D micrograph.
    box : float
        Particle box in micrograph pixels.
    config : PickConfig, optional
        Uses ``step`` and ``edge`` (an edge below 0.5 box pads the image to score near borders).
    device : torch.device, optional
        Defaults to the model's device.
    """
    config = config or PickConfig()
    prepared = prepare_micrograph(image, box, model.preprocess)
    return score_prepared(model, prepared, config.step, device, _edge_pad(config))


def _edge_pad(config: PickConfig) -> int:
    return int(math.ceil(max(0.0, 0.5 - config.edge) * TARGET_BOX))


def remove_ice(scores: np.ndarray, config: PickConfig, box_area_in_map: float) -> np.ndarray:
    """Zero the connected high-score regions that are far larger than a particle (ice, carbon)."""
    labels, n = ndimage.label(scores > config.region_threshold)
    if n == 0:
        return scores
    sizes = np.bincount(labels.ravel())[1:]
    limit = max(config.ice_factor * sizes.mean(), config.ice_min_area * box_area_in_map)
    ice = np.flatnonzero(sizes > limit) + 1
    if ice.size == 0:
        return scores
    cleaned = scores.copy()
    cleaned[np.isin(labels, ice)] = 0.0
    return cleaned


def _peaks(scores: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima (3 x 3) above ``floor``, with parabolic sub-pixel refinement."""
    local_max = ndimage.maximum_filter(scores, size=3, mode="constant", cval=-1.0)
    ii, jj = np.nonzero((scores >= local_max) & (scores > floor))
    padded = np.pad(scores, 1, mode="edge")

    def refine(minus, centre, plus):
        denom = minus - 2 * centre + plus
        with np.errstate(divide="ignore", invalid="ignore"):
            off = np.where(denom < 0, 0.5 * (minus - plus) / denom, 0.0)
        return np.clip(off, -0.5, 0.5)

    c = scores[ii, jj]
    di = refine(padded[ii, jj + 1], c, padded[ii + 2, jj + 1])
    dj = refine(padded[ii + 1, jj], c, padded[ii + 1, jj + 2])
    return ii + di, jj + dj


def suppress_close(rows, cols, scores, min_dist: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression: higher scores first, ``min_dist`` apart."""
    order = np.argsort(-scores, kind="stable")
    pts = np.column_stack([rows, cols])[order]
    if len(pts) == 0:
        return order
    pairs = cKDTree(pts).query_pairs(min_dist, output_type="ndarray")
    if len(pairs) == 0:
        return order
    neighbours = [[] for _ in range(len(pts))]
    for a, b in pairs:
        lo, hi = (a, b) if a < b else (b, a)
        neighbours[lo].append(hi)
    removed = np.zeros(len(pts), dtype=bool)
    for k in range(len(pts)):
        if not removed[k]:
            removed[neighbours[k]] = True
    return order[~removed]


def outlier_fraction(unclipped: np.ndarray, rows: np.ndarray, cols: np.ndarray, sigma: float) -> np.ndarray:
    """Fraction of pixels beyond ``sigma`` in the 64 x 64 box around rescaled positions."""
    frac = ndimage.uniform_filter((np.abs(unclipped) > sigma).astype(np.float32), TARGET_BOX, mode="reflect")
    r = np.clip(np.rint(rows).astype(int), 0, frac.shape[0] - 1)
    c = np.clip(np.rint(cols).astype(int), 0, frac.shape[1] - 1)
    return frac[r, c]


def find_picks(score_map: ScoreMap, prepared: PreparedImage, box: float, config: PickConfig | None = None,
               image_shape: tuple[int, int] | None = None) -> pd.DataFrame:
    """Turn a score map into particle picks (x, y, score), sorted by decreasing score.

    Parameters
    ----------
    score_map : ScoreMap
        From :func:`score_prepared` / :func:`score_micrograph`.
    prepared : PreparedImage
        The rescaled image (``unclipped`` used for outlier removal when present).
    box : float
        Particle box in micrograph pixels.
    config : PickConfig, optional
        Thresholds and distances.
    image_shape : tuple, optional
        Micrograph shape, for the edge distance (default: from ``prepared`` and its scale).
    """
    config = config or PickConfig()
    spacing = float(np.mean(score_map.spacing))
    scores = remove_ice(score_map.data, config, (box / spacing) ** 2)
    # Peaks are located on a lightly smoothed map: saturated plateaus and single-step noise
    # would otherwise place centres arbitrarily; the score reported is the unsmoothed one.
    ii, jj = _peaks(ndimage.gaussian_filter(scores, 1.0, mode="nearest"), 1e-3)
    raw_max = ndimage.maximum_filter(scores, size=3, mode="nearest")
    # Sub-pixel offsets reach +-0.5: rounding can step one past the last row or column.
    ri = np.clip(np.rint(ii).astype(int), 0, scores.shape[0] - 1)
    rj = np.clip(np.rint(jj).astype(int), 0, scores.shape[1] - 1)
    values = raw_max[ri, rj]
    above = values > config.threshold
    ii, jj, values = ii[above], jj[above], values[above]
    rows, cols = score_map.positions(ii, jj)
    if image_shape is None:
        image_shape = (prepared.data.shape[0] / prepared.scale[0], prepared.data.shape[1] / prepared.scale[1])
    margin = config.edge * box
    inside = (rows >= margin - 1e-6) & (cols >= margin - 1e-6)
    inside &= (rows <= image_shape[0] - 1 - margin + 1e-6) & (cols <= image_shape[1] - 1 - margin + 1e-6)
    rows, cols, values = rows[inside], cols[inside], values[inside]
    if prepared.unclipped is not None and config.max_outlier_fraction < 1 and len(rows):
        nr, nc = prepared.to_network(rows, cols)
        ok = outlier_fraction(prepared.unclipped, nr, nc, config.outlier_sigma) <= config.max_outlier_fraction
        rows, cols, values = rows[ok], cols[ok], values[ok]
    keep = suppress_close(rows, cols, values, config.min_distance * box)
    picks = pd.DataFrame({"x": cols[keep], "y": rows[keep], "score": values[keep].astype(float)})
    picks = picks[picks["score"] > config.threshold]
    if config.top_n is not None:
        picks = picks.head(config.top_n)
    return picks.reset_index(drop=True)


def pick_micrograph(model, image: np.ndarray, box: float, config: PickConfig | None = None,
                    device=None) -> tuple[pd.DataFrame, ScoreMap]:
    """Pick one micrograph: preprocess, score densely, clean, filter, check the null and sort.

    Returns
    -------
    picks : DataFrame
        Columns x, y (micrograph pixels, particle centres) and score, by decreasing score.
        ``picks.attrs`` holds ``"threshold"`` (the one used) and, with ``config.null_check``,
        ``"null_check"`` (:class:`~napari_deeppicker.core.nullcheck.NullCheck` as a dict).
    score_map : ScoreMap
        The dense map (before ice cleaning), for display or saving.
    """
    config = config or PickConfig()
    prepared = prepare_micrograph(image, box, model.preprocess, keep_unclipped=True)
    score_map = score_prepared(model, prepared, config.step, device, _edge_pad(config))
    null = None
    if config.null_check:
        null_prep = null_prepared(prepared, config.null_seed)
        null = (score_prepared(model, null_prep, config.step, device, _edge_pad(config)), null_prep)
    picks = finish_picks(score_map, prepared, box, config, np.asarray(image).shape, null)
    return picks, score_map


def finish_picks(score_map: ScoreMap, prepared: PreparedImage, box: float, config: PickConfig,
                 image_shape: tuple[int, int], null: tuple | None = None) -> pd.DataFrame:
    """Candidates of a score map -> picks: null check, threshold ("auto" too) and ``top_n``.

    ``null`` is ``(score map, prepared image)`` of the micrograph's null
    (:func:`~napari_deeppicker.core.nullcheck.null_prepared`), required when
    ``config.null_check``; its candidates go through the same cleaning and filters.
    """
    every = replace(config, threshold=0.0, top_n=None)
    candidates = find_picks(score_map, prepared, box, every, image_shape=image_shape)
    attrs = {}
    if config.null_check:
        if null is None:
            raise ValueError("null_check needs the score map of the micrograph's null")
        null_candidates = find_picks(null[0], null[1], box, every, image_shape=image_shape)
        check = compare_to_null(candidates["score"], null_candidates["score"],
                                top=config.null_top, margin=config.null_margin,
                                alpha=config.null_alpha)
        attrs["null_check"] = check.to_dict()
        if check.particle_free:
            log.info("particle-free by the noise null (evidence %.2f, KS p %.2g): no pick kept",
                     check.evidence, check.ks_pvalue)
            candidates = candidates.iloc[:0]
    threshold = config.threshold
    if threshold == "auto":
        from napari_deeppicker.core.calibration import otsu_threshold

        threshold = otsu_threshold(candidates["score"].to_numpy())  # 0.5 when too few
    picks = candidates[candidates["score"] > threshold]
    if config.top_n is not None:
        picks = picks.head(config.top_n)
    picks = picks.reset_index(drop=True)
    picks.attrs = {"threshold": float(threshold), **attrs}
    return picks
