"""Small synthetic data and a quickly trained model shared by the widget tests (cached)."""

from __future__ import annotations

import functools

import numpy as np

BOX = 48
SIZE = 512


@functools.lru_cache(maxsize=None)
def micrograph(seed: int = 1):
    """A 512 x 512 synthetic micrograph (float32) and its true particle centres (x, y)."""
    from napari_deeppicker.core.synthetic import simulate_micrograph

    image, truth = simulate_micrograph(SIZE, box=BOX, seed=seed)
    image.setflags(write=False)
    return image, truth


@functools.lru_cache(maxsize=None)
def tiny_model():
    """A model trained for 4 epochs on three synthetic micrographs (10-20 s on a CPU)."""
    from napari_deeppicker.core.training import TrainConfig, TrainingSet, train_model

    images, coords = zip(*(micrograph(seed) for seed in (11, 12, 13)))
    tset = TrainingSet(list(images), list(coords), BOX, name="synthetic")
    return train_model([tset], TrainConfig(epochs=4, batch_size=16, seed=0))


def stack(seeds=(1, 2)) -> np.ndarray:
    """A stack of synthetic micrographs, one per slice."""
    return np.stack([micrograph(seed)[0] for seed in seeds])
