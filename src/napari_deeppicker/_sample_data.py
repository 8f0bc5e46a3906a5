"""npe2 sample data: a simulated micrograph with its ground truth, and a real micrograph with
expert picks (beta-galactosidase, EMPIAR-10017; see ``sample_data/README.md``).

Both open as an image layer (scale 1, pixel size in the metadata, as the reader does) plus a
points layer ``"<image> reference"`` of the reference particle centres.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from napari_deeppicker._layers import image_layer_metadata, points_layer_data
from napari_deeppicker._reader import robust_contrast_limits
from napari_deeppicker.core import io

logger = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).parent / "sample_data"
REAL_STEM = "Falcon_2012_06_12-14_57_34_0"
REAL_MICROGRAPH = SAMPLE_DIR / f"{REAL_STEM}.mrc.gz"
REAL_COORDINATES = SAMPLE_DIR / f"{REAL_STEM}.star"
REAL_SECOND_PICKER = SAMPLE_DIR / f"{REAL_STEM}_second_picker.star"
REAL_BOX = 32
"""Box size (pixels) of the real sample: particles are about 27 pixels across."""
REAL_VALUE_FACTOR = 16
"""The real sample stores 16 x its pixel values as uint16 integers: exact, and smaller."""
SYNTHETIC_SIZE = 1024
SYNTHETIC_BOX = 64
SYNTHETIC_SEED = 0


def load_real_micrograph() -> io.Micrograph:
    """The real sample micrograph with its original float values (exactly).

    Returns
    -------
    Micrograph
        1024 x 1024 float32 image, 7.08 Angstrom per pixel.
    """
    mic = io.read_micrograph(REAL_MICROGRAPH)
    mic.data = mic.data / np.float32(REAL_VALUE_FACTOR)
    return mic


def _image_tuple(data: np.ndarray, name: str, meta: dict) -> tuple:
    kwargs = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": robust_contrast_limits(data),
        "metadata": {"deeppicker": meta},
    }
    return data, kwargs, "image"


def real_sample() -> list[tuple]:
    """A real beta-galactosidase micrograph with its expert picks.

    Returns
    -------
    list of tuple
        The image layer and the points layer ``"<image> reference"`` (source ``manual``).
    """
    mic = load_real_micrograph()
    meta = image_layer_metadata(REAL_MICROGRAPH, mic.pixel_size, micrograph=REAL_STEM, box=REAL_BOX)
    coords = io.read_coordinates(REAL_COORDINATES)
    points = points_layer_data(
        coords, name=f"{REAL_STEM} reference", box=REAL_BOX, source="manual",
        metadata={"micrograph": REAL_STEM, "path": str(REAL_COORDINATES),
                  "pixel_size": mic.pixel_size},
    )
    return [_image_tuple(mic.data, REAL_STEM, meta), points]


def synthetic_sample() -> list[tuple]:
    """A simulated 1024 x 1024 micrograph (fixed seed) with its exact particle centres.

    Returns
    -------
    list of tuple
        The image layer ``"synthetic"`` and the points layer ``"synthetic reference"``.
    """
    from napari_deeppicker.core.synthetic import simulate_micrograph

    image, truth = simulate_micrograph(SYNTHETIC_SIZE, box=SYNTHETIC_BOX, seed=SYNTHETIC_SEED)
    pixel_size = truth.attrs.get("simulation", {}).get("pixel_size")
    name = "synthetic"
    meta = image_layer_metadata(None, pixel_size, micrograph=name, box=SYNTHETIC_BOX,
                                seed=SYNTHETIC_SEED)
    points = points_layer_data(
        truth, name=f"{name} reference", box=SYNTHETIC_BOX, source="manual",
        metadata={"micrograph": name, "pixel_size": pixel_size},
    )
    return [_image_tuple(image, name, meta), points]
