"""The paper's fully automated iteration: pick the target, retrain on its own top picks, pick again.

A model trained on other molecules picks the new molecule; the most confident picks become the
positives of a fine-tuning round on the target itself. Random negatives keep away from every
candidate above a low score, so particles the model was unsure about are not taught as background.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.training import TrainConfig, Trainer, TrainingSet, TrainProgress


@dataclass
class SelfTrainProgress:
    """One step of :class:`SelfTrainer` (picking a micrograph, or a training step)."""

    iteration: int
    n_iterations: int
    stage: str  # "pick" or "train"
    micrograph: int = 0
    n_micrographs: int = 0
    train: TrainProgress | None = None


def select_top(picks: Sequence[pd.DataFrame], top_n: int | None) -> list[pd.DataFrame]:
    """Keep the ``top_n`` best picks over all micrographs (default: the better half)."""
    scores = np.concatenate([p["score"].to_numpy() for p in picks]) if picks else np.empty(0)
    if scores.size == 0:
        return [p.iloc[:0] for p in picks]
    n = top_n if top_n is not None else max(1, scores.size // 2)
    if n >= scores.size:
        return [p.copy() for p in picks]
    cutoff = np.sort(scores)[::-1][n - 1]
    return [p[p["score"] >= cutoff] for p in picks]


class SelfTrainer:
    """Iterate pick -> retrain on the top picks, ``iterations`` times.

    Parameters
    ----------
    model : PickerModel
        The starting (e.g. cross-molecule) model.
    micrographs : list of ndarray
        The target micrographs.
    box : float
        Particle box in micrograph pixels.
    top_n : int, optional
        Number of top picks (over all micrographs) used as positives; default: the better half
        of the picks above the threshold.
    iterations : int
        Rounds of pick + retrain.
    pick_config, train_config : optional
        Settings for the picking rounds and for fine-tuning. With ``threshold="auto"`` the
        positives of each micrograph are its picks above its own automatic (Otsu) threshold.
    candidate_floor : float
        Random negatives avoid every candidate scoring above this.
    """

    def __init__(self, model, micrographs, box, *, top_n=None, iterations=1, pick_config=None,
                 train_config=None, candidate_floor=0.1):
        self.model = model
        self.micrographs = list(micrographs)
        self.box = box
        self.top_n = top_n
        self.iterations = iterations
        self.pick_config = pick_config or PickConfig()
        self.train_config = train_config or TrainConfig(epochs=10, patience=3)
        self.candidate_floor = candidate_floor
        self.picks: list[pd.DataFrame] = []

    def _pick_all(self, iteration, config) -> Iterator[SelfTrainProgress]:
        self.picks = []
        for k, image in enumerate(self.micrographs):
            picks, _ = pick_micrograph(self.model, image, self.box, config)
            self.picks.append(picks)
            yield SelfTrainProgress(iteration, self.iterations, "pick", k + 1, len(self.micrographs))

    def _positive_level(self, picks: pd.DataFrame) -> float:
        """Score above which a pick is a positive: the threshold, or per micrograph for "auto"."""
        if self.pick_config.threshold != "auto":
            return float(self.pick_config.threshold)
        from napari_deeppicker.core.calibration import otsu_threshold

        return otsu_threshold(picks["score"].to_numpy())

    def run(self) -> Iterator[SelfTrainProgress]:
        """Run every iteration; ``self.model`` is the latest model, ``self.picks`` its picks."""
        auto = self.pick_config.threshold == "auto"
        floor = self.candidate_floor if auto else min(self.candidate_floor,
                                                      self.pick_config.threshold)
        low = replace(self.pick_config, threshold=floor, top_n=None)
        for it in range(1, self.iterations + 1):
            yield from self._pick_all(it, low)
            candidates = self.picks
            positives = select_top([p[p["score"] > self._positive_level(p)] for p in candidates],
                                   self.top_n)
            if sum(len(p) for p in positives) == 0:
                break
            tset = TrainingSet(self.micrographs, positives, self.box, avoid=candidates, name="self-training")
            trainer = Trainer([tset], replace(self.train_config, seed=self.train_config.seed + it),
                              init=self.model)
            for step in trainer.run():
                yield SelfTrainProgress(it, self.iterations, "train", train=step)
            self.model = trainer.best_model
            self.model.metadata["self_training"] = {
                "iterations": it, "top_n": int(sum(len(p) for p in positives)),
                "candidate_floor": self.candidate_floor}
        yield from self._pick_all(self.iterations + 1, self.pick_config)
