"""Shared fixtures for the core tests: small synthetic micrographs and a small trained model."""

import numpy as np
import pytest

from napari_deeppicker.core.synthetic import simulate_micrograph

BOX = 48
SIZE = 512


@pytest.fixture(scope="session")
def synthetic_set():
    """Four 512 px micrographs of globular particles (box 48) with their exact centres."""
    return [simulate_micrograph(SIZE, shape="globular", box=BOX, seed=s, defocus_um=2.0, n_particles=40)
            for s in range(4)]


@pytest.fixture(scope="session")
def trained_model(synthetic_set):
    """A model trained for a few epochs on three of the synthetic micrographs."""
    from napari_deeppicker.core.training import TrainConfig, TrainingSet, train_model

    images = [im for im, _ in synthetic_set[:3]]
    coords = [c for _, c in synthetic_set[:3]]
    config = TrainConfig(epochs=20, patience=5, seed=0, batch_size=32)
    return train_model([TrainingSet(images, coords, BOX, name="globular")], config)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
