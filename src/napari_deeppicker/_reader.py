"""npe2 reader of micrographs: MRC files, ``.mrcs`` stacks and folders of micrographs.

Scale rule: micrograph layers keep ``scale`` 1 (one data unit = one pixel), because coordinates
files are in pixels; the pixel size (Angstrom) goes to ``metadata["deeppicker"]["pixel_size"]``.
Points read from a coordinates file therefore land on the right pixels of an image opened here.

Stacks: an ``.mrcs`` file or a folder of micrographs opens as one 3D layer (slice, row, col). The
stems of the slices are listed in ``metadata["deeppicker"]["micrographs"]`` (a folder: sorted file
names; an ``.mrcs`` file: RELION's ``000001@stack`` names). A folder is read lazily with dask:
only headers are read when it opens, pixels when a slice is shown or computed.

Coordinates files are read by :mod:`napari_deeppicker._reader_coords`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import mrcfile
import numpy as np

from napari_deeppicker._layers import image_layer_metadata
from napari_deeppicker.core import io
from napari_deeppicker.core._files import file_stem
from napari_deeppicker.core.errors import MicrographError

logger = logging.getLogger(__name__)

MICROGRAPH_SUFFIXES = (".mrc", ".mrcs", ".mrc.gz", ".mrcs.gz")
PERCENTILES = (0.5, 99.5)
"""Contrast limits of a micrograph: these percentiles of its pixels."""
_HEADER_SIGMAS = 3.0  # lazy stacks: contrast limits mean +- this many rms from the headers
_SAMPLE_PIXELS = 2**20  # percentiles are computed on at most about this many pixels


def _name_of(path) -> str:
    return os.path.basename(os.fspath(path).rstrip("/\\")).lower()


def _is_micrograph_file(path) -> bool:
    return _name_of(path).endswith(MICROGRAPH_SUFFIXES) and os.path.isfile(path)


def _folder_micrographs(folder) -> list[Path]:
    found = (p for p in Path(folder).iterdir() if p.name.lower().endswith((".mrc", ".mrc.gz")))
    return sorted(p for p in found if p.is_file())


def get_micrograph_reader(path) -> Callable | None:
    """npe2 ``get_reader`` for MRC micrographs, ``.mrcs`` stacks and folders of micrographs.

    Parameters
    ----------
    path : str or list of str
        A file, a folder or several files.

    Returns
    -------
    callable or None
        :func:`read_micrographs`, or None when ``path`` is not something this reader opens.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        return None
    for item in paths:
        if os.path.isdir(item):
            if not _folder_micrographs(item):
                return None
        elif not _is_micrograph_file(item):
            return None
    return read_micrographs


def read_micrographs(path) -> list[tuple]:
    """Read micrographs as image layers: one per file, one 3D layer per stack or folder.

    Parameters
    ----------
    path : str or list of str
        ``.mrc`` / ``.mrc.gz`` (2D), ``.mrcs`` (stack: 3D) or a folder of ``.mrc`` /
        ``.mrc.gz`` files (lazy 3D stack).

    Returns
    -------
    list of tuple
        LayerDataTuples ``(data, kwargs, "image")``.

    Raises
    ------
    MicrographError
        If a file is unreadable, or the micrographs of a folder differ in shape.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [read_folder(p) if os.path.isdir(p) else read_micrograph_file(p) for p in paths]


def robust_contrast_limits(data: np.ndarray) -> tuple[float, float]:
    """Contrast limits from the ``PERCENTILES`` of (a regular subsample of) the pixels."""
    data = np.asarray(data)
    step = max(1, math.ceil(math.sqrt(data.size / _SAMPLE_PIXELS)))
    sample = data[..., ::step, ::step]
    low, high = (float(v) for v in np.percentile(sample, PERCENTILES))
    if not high > low:
        low, high = float(sample.min()), float(sample.max())
    return (low, high) if high > low else (low, low + 1.0)


def _header(path: Path) -> dict:
    """Shape, pixel size and intensity statistics from an MRC header (no pixel is read)."""
    try:
        with mrcfile.open(path, header_only=True, permissive=False) as mrc:
            header = mrc.header
            voxel = float(str(np.float32(mrc.voxel_size.x)))
            info = {
                "shape": (int(header.nz), int(header.ny), int(header.nx)),
                "stats": tuple(float(header[k]) for k in ("dmin", "dmax", "dmean", "rms")),
            }
    except (ValueError, OSError, EOFError) as err:
        raise MicrographError(f"{path}: not a readable MRC file ({err})") from err
    info["pixel_size"] = voxel if np.isfinite(voxel) and voxel > 0 else None
    return info


def read_micrograph_file(path) -> tuple:
    """One MRC file as an image layer: 2D, or 3D for ``.mrcs`` and multi-section files.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    tuple
        ``(data, kwargs, "image")`` named after the file stem.
    """
    path = Path(path)
    stem = file_stem(path)
    is_stack = path.name.lower().endswith((".mrcs", ".mrcs.gz")) or _header(path)["shape"][0] > 1
    if is_stack:
        data, pixel_size = io.read_micrograph_stack(path)
        names = [f"{i + 1:06d}@{stem}" for i in range(len(data))]
        meta = image_layer_metadata(path, pixel_size, micrographs=names,
                                    files=[str(path)] * len(data))
    else:
        mic = io.read_micrograph(path)
        data, pixel_size = mic.data, mic.pixel_size
        meta = image_layer_metadata(path, pixel_size, micrograph=stem)
    kwargs = {
        "name": stem,
        "colormap": "gray",
        "contrast_limits": robust_contrast_limits(data),
        "metadata": {"deeppicker": meta},
    }
    return data, kwargs, "image"


def _load_section(path: str) -> np.ndarray:
    """Pixels of one micrograph of a lazy stack (called by dask when a slice is needed)."""
    return io.read_micrograph(path).data


def _header_contrast(headers: list[dict]) -> tuple[float, float] | None:
    """Contrast limits from the headers' mean and rms; None when the headers hold no statistics."""
    stats = np.array([h["stats"] for h in headers], dtype=float)
    dmin, dmax, dmean, rms = stats.T
    valid = np.isfinite(stats).all(axis=1) & (dmax > dmin) & (rms > 0)
    if not valid.any():
        return None
    mean, sigma = float(np.median(dmean[valid])), float(np.median(rms[valid]))
    low = max(mean - _HEADER_SIGMAS * sigma, float(dmin[valid].min()))
    high = min(mean + _HEADER_SIGMAS * sigma, float(dmax[valid].max()))
    return (low, high) if high > low else None


def _describe_shapes(files: list[Path], shapes: list[tuple[int, int]]) -> str:
    groups: dict[tuple[int, int], list[Path]] = {}
    for file, shape in zip(files, shapes):
        groups.setdefault(shape, []).append(file)
    return "; ".join(
        f"{cols} x {rows} ({len(g)} files, e.g. {g[0].name})" for (rows, cols), g in groups.items()
    )


def read_folder(folder) -> tuple:
    """A folder of micrographs as one lazy 3D stack layer (dask): only headers are read now.

    Parameters
    ----------
    folder : str or os.PathLike
        Folder holding ``*.mrc`` / ``*.mrc.gz`` files (sorted by name: slice order).

    Returns
    -------
    tuple
        ``(dask array (n, rows, cols), kwargs, "image")`` named after the folder.

    Raises
    ------
    MicrographError
        If a header is unreadable, a file holds several sections, or the shapes differ.
    """
    import dask
    import dask.array as da

    folder = Path(folder)
    files = io.list_micrographs(folder)
    headers = [_header(f) for f in files]
    for file, header in zip(files, headers):
        if header["shape"][0] != 1:
            raise MicrographError(
                f"{file}: holds {header['shape'][0]} sections; "
                "a folder must hold single micrographs"
            )
    shapes = [h["shape"][1:] for h in headers]
    if len(set(shapes)) > 1:
        raise MicrographError(
            f"{folder}: the micrographs differ in size and cannot form one stack: "
            f"{_describe_shapes(files, shapes)}. Open them one by one or split the folder."
        )
    pixel_sizes = {h["pixel_size"] for h in headers}
    if len(pixel_sizes) > 1:
        logger.warning("%s: the micrographs have different pixel sizes %s; using the first",
                       folder, pixel_sizes)
    load = dask.delayed(_load_section, pure=True)
    data = da.stack([
        da.from_delayed(load(os.fspath(f)), shape=shapes[0], dtype=np.float32) for f in files
    ])
    contrast = _header_contrast(headers)
    if contrast is None:
        logger.info("%s: no intensity statistics in the headers; contrast from %s",
                    folder, files[0].name)
        contrast = robust_contrast_limits(_load_section(os.fspath(files[0])))
    meta = image_layer_metadata(
        folder, headers[0]["pixel_size"], micrographs=[file_stem(f) for f in files],
        files=[os.fspath(f) for f in files],
    )
    kwargs = {"name": folder.name, "colormap": "gray", "contrast_limits": contrast,
              "metadata": {"deeppicker": meta}}
    return data, kwargs, "image"
