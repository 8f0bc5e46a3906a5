"""The paper's self-training iteration (core/selftrain.py), with fixed and automatic thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deeppicker.core.evaluation import match_picks
from napari_deeppicker.core.picking import PickConfig
from napari_deeppicker.core.selftrain import SelfTrainer
from napari_deeppicker.core.training import TrainConfig

BOX = 48


@pytest.mark.parametrize("threshold", [0.5, "auto"])
def test_self_training_retrains_on_its_picks_and_picks_again(trained_model, synthetic_set,
                                                             threshold):
    image, truth = synthetic_set[3]
    before = {k: v.clone() for k, v in trained_model.net.state_dict().items()}
    trainer = SelfTrainer(trained_model, [image], BOX, iterations=1,
                          pick_config=PickConfig(threshold=threshold),
                          train_config=TrainConfig(epochs=1, patience=1, seed=0, batch_size=32))
    stages = [step.stage for step in trainer.run()]
    assert stages[0] == "pick" and "train" in stages and stages[-1] == "pick"
    meta = trainer.model.metadata["self_training"]
    assert meta["iterations"] == 1 and meta["top_n"] > 0
    changed = [not np.array_equal(before[k].numpy(), v.numpy())
               for k, v in trainer.model.net.state_dict().items() if v.dtype.is_floating_point]
    assert any(changed)
    assert all(np.array_equal(before[k].numpy(), v.numpy())  # the input model is untouched
               for k, v in trained_model.net.state_dict().items())
    picks = trainer.picks[0]
    used = picks.attrs["threshold"]
    assert (used >= 0.5) and (picks["score"] > used).all()
    assert match_picks(picks, truth, BOX).recall >= 0.8
