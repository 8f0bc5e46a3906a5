"""Small datasets and helpers shared by the batch, watch, Dask and RELION tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_deeppicker.core.batch import coordinate_rows
from napari_deeppicker.core.io import write_micrograph
from napari_deeppicker.core.model import new_model, save_model
from napari_deeppicker.core.synthetic import simulate_micrograph

BOX = 48
SIZE = 256


def make_micrographs(folder: Path, n: int, *, size: int = SIZE, prefix: str = "mic",
                     seed: int = 0) -> list[Path]:
    """Write ``n`` simulated micrographs ``<prefix>_000.mrc`` ... into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        image, _ = simulate_micrograph(size, shape="globular", box=BOX, seed=seed + k,
                                       n_particles=12, defocus_um=2.0)
        path = folder / f"{prefix}_{k:03d}.mrc"
        write_micrograph(path, image, pixel_size=2.0)
        paths.append(path)
    return paths


def make_model_file(folder: Path, seed: int = 0) -> Path:
    """An untrained model (speed and file layout do not depend on the weights)."""
    folder.mkdir(parents=True, exist_ok=True)
    return save_model(new_model(seed), folder / f"model_{seed}.safetensors")


def rows(path: Path) -> list[str]:
    """The coordinates rows of a per-micrograph STAR file (values as written)."""
    return coordinate_rows(Path(path))


def as_array(lines: list[str]) -> np.ndarray:
    """Rows ``"x y score"`` as an (n, 3) float array."""
    return np.array([line.split() for line in lines], dtype=float).reshape(-1, 3)


def star_loop(path: Path) -> tuple[str, list[str], list[list[str]]]:
    """(block name, labels, rows) of the first loop of a STAR file, parsed by hand."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    block = next(line[5:] for line in lines if line.startswith("data_"))
    start = lines.index("loop_") + 1
    labels = []
    while start < len(lines) and lines[start].startswith("_"):
        labels.append(lines[start].split()[0])
        start += 1
    data = [line.split() for line in lines[start:] if line and not line.startswith("#")]
    return block, labels, data
