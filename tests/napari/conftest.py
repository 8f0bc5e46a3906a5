"""Fixtures of the napari tests: micrographs with bright dots at known particle positions.

A dot's value identifies it, so a test can check that each point of a points layer lies on the
pixel of the right particle (and that x and y were not swapped: the images are not square).
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_deeppicker.core import io

SHAPE = (60, 80)  # rows, cols
DOTS = pd.DataFrame({"x": [10.0, 70.0, 33.0, 55.0], "y": [5.0, 20.0, 50.0, 41.0]})
DOT_VALUES = np.array([100.0, 110.0, 120.0, 130.0], dtype=np.float32)


@dataclass
class DotsMicrograph:
    """An MRC file whose pixel at each particle centre holds that particle's value."""

    path: Path
    image: np.ndarray
    coords: pd.DataFrame
    values: np.ndarray


def dots_image(coords: pd.DataFrame, values: np.ndarray, shape=SHAPE) -> np.ndarray:
    """Zero image with ``values`` at the (rounded) particle centres."""
    image = np.zeros(shape, dtype=np.float32)
    image[np.round(coords["y"]).astype(int), np.round(coords["x"]).astype(int)] = values
    return image


def as_layer(layer_data_tuple):
    """A napari layer made from a reader's LayerDataTuple, as the viewer would add it."""
    from napari.layers import Layer

    return Layer.create(*layer_data_tuple)


def values_at_points(image_layer, points_layer) -> np.ndarray:
    """Image values under each point, mapped through both layers' world transforms."""
    values = []
    for point in np.asarray(points_layer.data):
        world = points_layer.data_to_world(point)
        index = np.round(np.asarray(image_layer.world_to_data(world), dtype=float)).astype(int)
        values.append(np.asarray(image_layer.data[tuple(index)]))
    return np.array(values, dtype=float)


@pytest.fixture
def dots(tmp_path) -> DotsMicrograph:
    """``dots.mrc``: a 60 x 80 micrograph with four particles, pixel size 2.5 A."""
    image = dots_image(DOTS, DOT_VALUES)
    path = tmp_path / "dots.mrc"
    io.write_micrograph(path, image, pixel_size=2.5)
    return DotsMicrograph(path, image, DOTS.copy(), DOT_VALUES.copy())


@pytest.fixture
def dots_folder(tmp_path) -> tuple[Path, list[np.ndarray]]:
    """A folder of three 60 x 80 micrographs ``mic_a``, ``mic_b``, ``mic_c``; each has the dots
    of ``DOTS`` shifted by its index and valued ``DOT_VALUES + 1000 * index``."""
    folder = tmp_path / "micrographs"
    folder.mkdir()
    images = []
    for i, stem in enumerate(("mic_a", "mic_b", "mic_c")):
        image = dots_image(DOTS + i, DOT_VALUES + 1000 * i)
        io.write_micrograph(folder / f"{stem}.mrc", image, pixel_size=2.5)
        images.append(image)
    return folder, images
