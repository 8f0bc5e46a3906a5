"""Training: examples, negatives, equal shares, early stop, cancel, reproducibility, fine-tuning."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.spatial import cKDTree

from napari_deeppicker.core.errors import TrainingDataError
from napari_deeppicker.core.training import (
    TrainConfig,
    Trainer,
    TrainingSet,
    sample_negatives,
    train_model,
)

from .conftest import BOX


def test_negatives_keep_away_from_positives(rng):
    positives = rng.uniform(50, 450, size=(60, 2))
    neg = sample_negatives((512, 512), BOX, positives, np.empty((0, 2)), 60, TrainConfig(), rng)
    assert len(neg) == 60
    d, _ = cKDTree(positives).query(neg)
    assert d.min() >= 0.6 * BOX
    assert neg.min() >= 0.5 * BOX and neg.max() <= 511 - 0.5 * BOX


def _small_set(synthetic_set, k=2, name="a"):
    return TrainingSet([im for im, _ in synthetic_set[:k]], [c for _, c in synthetic_set[:k]], BOX, name=name)


def test_equal_shares_and_summary(synthetic_set):
    big = _small_set(synthetic_set, 3, "big")
    small = TrainingSet([synthetic_set[3][0]], [synthetic_set[3][1].head(10)], BOX, name="small")
    trainer = Trainer([big, small], TrainConfig(epochs=1))
    for _ in trainer.run():
        pass
    sets = trainer.best_model.metadata["training"]["sets"]
    assert [s["positives_used"] for s in sets] == [10, 10]
    assert [s["negatives_used"] for s in sets] == [10, 10]
    assert sets[0]["particles_available"] > 50


def test_progress_cancel_and_best_model(synthetic_set):
    trainer = Trainer([_small_set(synthetic_set)], TrainConfig(epochs=50, batch_size=16))
    stages = []
    for step in trainer.run():
        stages.append(step.stage)
        if step.stage == "train" and step.epoch == 2 and step.batch == 2:
            break  # the user pressed Stop mid-epoch
    assert stages[0] == "extract" and "train" in stages
    assert len(trainer.history) == 1  # one finished epoch
    model = trainer.best_model
    state = trainer.best_state
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, state[k])
    assert model.metadata["training"]["best_epoch"] == 1


def test_reproducible_with_a_seed(synthetic_set):
    cfg = TrainConfig(epochs=1, seed=7, batch_size=32)
    a = train_model([_small_set(synthetic_set)], cfg)
    b = train_model([_small_set(synthetic_set)], cfg)
    for x, y in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(x, y)


def test_validation_accuracy_rises(synthetic_set):
    model = train_model([_small_set(synthetic_set, 3)], TrainConfig(epochs=8, patience=10, batch_size=32))
    history = model.metadata["training"]["history"]
    assert history[-1]["val_accuracy"] > 0.85
    assert history[-1]["val_loss"] < history[0]["val_loss"]


def test_fine_tuning_keeps_preprocessing_and_uses_hard_negatives(trained_model, synthetic_set):
    image, truth = synthetic_set[3]
    hard = pd.DataFrame({"x": [100.0, 300.0], "y": [100.0, 300.0]})
    tset = TrainingSet([image], [truth], BOX, hard_negatives=[hard], name="edits")
    trainer = Trainer([tset], TrainConfig(epochs=1), init=trained_model)
    for _ in trainer.run():
        pass
    tuned = trainer.best_model
    assert tuned.preprocess == trained_model.preprocess
    assert tuned.net is not trained_model.net
    changed = any(not torch.equal(a, b) for a, b in zip(tuned.net.parameters(), trained_model.net.parameters()))
    assert changed


def test_nothing_to_train_on(synthetic_set):
    image, _ = synthetic_set[0]
    empty = TrainingSet([image], [pd.DataFrame({"x": [], "y": []})], BOX, name="empty")
    with pytest.raises(TrainingDataError, match="empty"):
        for _ in Trainer([empty], TrainConfig(epochs=1)).run():
            pass
    with pytest.raises(TrainingDataError):
        Trainer([], TrainConfig())
