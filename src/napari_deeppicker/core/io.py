"""Reading and writing micrographs (MRC) and particle coordinates (STAR, BOX, CSV, Topaz).

Micrographs come back as 2D float32 arrays (read-only memory maps for large uncompressed
float32 files), coordinates as DataFrames with columns ``x`` (column index) and ``y`` (row
index) of particle centres, plus ``score``, ``micrograph`` and ``source`` when known. This is
the only module that knows file column names. Bad input raises
:class:`~napari_deeppicker.core.errors.MicrographError` or
:class:`~napari_deeppicker.core.errors.CoordinatesError` naming the file and the problem.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from ._coords import (
    COORD_FORMATS,
    check_coordinates_in_image,
    detect_format,
    read_coordinates,
    read_coordinates_by_micrograph,
    strip_pick_suffix,
    write_coordinates,
)
from ._files import (
    atomic_path,
    atomic_write,
    file_stem,
    list_micrographs,
    match_stem,
    pair_files,
)
from ._mrc import load_mrc
from .errors import MicrographError

__all__ = [
    "COORD_FORMATS",
    "Micrograph",
    "atomic_write",
    "check_coordinates_in_image",
    "check_image",
    "detect_format",
    "file_stem",
    "list_micrographs",
    "match_stem",
    "pair_files",
    "read_coordinates",
    "read_coordinates_by_micrograph",
    "read_micrograph",
    "read_micrograph_stack",
    "strip_pick_suffix",
    "write_coordinates",
    "write_micrograph",
]

logger = logging.getLogger(__name__)

# Float32 data at least this large are returned as they are (a read-only memory map, or the
# decompressed buffer) and other types are converted in one pass, so that a multi-GB file is
# never held twice in memory. Smaller images are returned as writable copies.
MMAP_MIN_BYTES = 128 * 2**20
_CHECK_CHUNK = 2**23  # elements scanned at a time by check_image


@dataclass
class Micrograph:
    """A micrograph image with where it came from.

    Attributes
    ----------
    data : numpy.ndarray
        2D float32 image (rows, cols); a read-only memory map for large float32 files.
    path : pathlib.Path or None
        The file it was read from.
    pixel_size : float or None
        Angstrom per pixel from the header; None when the header holds 0.
    """

    data: np.ndarray
    path: Path | None
    pixel_size: float | None

    @property
    def name(self) -> str:
        """The file stem (``mic1`` for ``mic1.mrc.gz``), or ``"micrograph"`` without a path."""
        return file_stem(self.path) if self.path is not None else "micrograph"


def check_image(data: np.ndarray, name: str) -> np.ndarray:
    """Check that an array is a usable micrograph and return it as float32.

    Parameters
    ----------
    data : numpy.ndarray
        The image.
    name : str
        What to call it in error messages (usually the file name).

    Returns
    -------
    numpy.ndarray
        ``data`` itself when it is already float32, else a float32 copy.

    Raises
    ------
    MicrographError
        If the array is not 2D, is smaller than 2 x 2, holds NaN or inf, or is constant.
    """
    data = np.asanyarray(data)  # keeps a memmap a memmap
    if data.ndim != 2:
        raise MicrographError(f"{name}: expected a 2D image, got an array of shape {data.shape}")
    if min(data.shape) < 2:
        raise MicrographError(f"{name}: the image is only {data.shape[1]} x {data.shape[0]} pixels")
    if not (np.issubdtype(data.dtype, np.integer) or np.issubdtype(data.dtype, np.floating)):
        raise MicrographError(f"{name}: pixels of type {data.dtype} are not real numbers")
    data = data.astype(np.float32, copy=False)
    rows = max(1, _CHECK_CHUNK // data.shape[1])
    n_bad, low, high = 0, np.inf, -np.inf
    for start in range(0, data.shape[0], rows):
        chunk = data[start : start + rows]
        finite = np.isfinite(chunk)
        if not finite.all():
            n_bad += int(chunk.size - np.count_nonzero(finite))
            chunk = chunk[finite]
        if chunk.size:
            low, high = min(low, float(chunk.min())), max(high, float(chunk.max()))
    if n_bad:
        raise MicrographError(f"{name}: {n_bad} pixels are NaN or infinite")
    if low == high:
        raise MicrographError(f"{name}: the image is constant (every pixel is {low:g})")
    return data


def _as_float32(data: np.ndarray, keep: bool) -> np.ndarray:
    if data.dtype == np.float32 and data.dtype.isnative:
        return data if keep else np.array(data)
    return np.asarray(data, dtype=np.float32)


def read_micrograph(path: str | os.PathLike, *, mmap: bool = True) -> Micrograph:
    """Read a micrograph from an MRC file (``.mrc``, ``.mrc.gz``, ``.mrc.bz2``).

    Parameters
    ----------
    path : str or os.PathLike
        The file: MRC mode 0, 1, 2, 6 or 12; 2D, or 3D with a single section.
    mmap : bool
        Keep large (``MMAP_MIN_BYTES``) uncompressed float32 data as a read-only memory map
        instead of reading them into memory; other types are converted from the map in one
        pass. Large float32 data from a compressed file are returned read-only, without a copy.
        Smaller images, and large uncompressed ones with ``mmap=False``, come as writable
        arrays.

    Returns
    -------
    Micrograph
        The float32 image, the path and the pixel size from the header.

    Raises
    ------
    MicrographError
        If the file is missing, not MRC, truncated, a stack of several sections, not 2D, or its
        pixels are NaN/inf or all equal.
    """
    path = Path(path)
    data, pixel_size, keep = load_mrc(path, mmap=mmap, large_bytes=MMAP_MIN_BYTES)
    if data.ndim == 3 and data.shape[0] > 1:
        raise MicrographError(
            f"{path}: this is a stack of {data.shape[0]} sections, not a single micrograph "
            "(read stacks with read_micrograph_stack)"
        )
    if data.ndim == 3:
        data = data[0]
    if data.ndim != 2:
        raise MicrographError(f"{path}: expected a 2D micrograph, the data have shape {data.shape}")
    image = check_image(_as_float32(data, keep), str(path))
    return Micrograph(data=image, path=path, pixel_size=pixel_size)


def read_micrograph_stack(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """Read a stack of micrographs (``.mrcs``) as one float32 array.

    Parameters
    ----------
    path : str or os.PathLike
        An MRC file with one or more sections (a 2D file gives a stack of one).

    Returns
    -------
    stack : numpy.ndarray
        float32 array of shape (n, rows, cols); read-only for large float32 files.
    pixel_size : float or None
        Angstrom per pixel from the header.

    Raises
    ------
    MicrographError
        If the file cannot be read, is not a stack of 2D sections, or a section is unusable.
    """
    path = Path(path)
    data, pixel_size, keep = load_mrc(path, mmap=True, large_bytes=MMAP_MIN_BYTES)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise MicrographError(
            f"{path}: expected a stack of 2D sections, the data have shape {data.shape}"
        )
    stack = _as_float32(data, keep)
    for i, section in enumerate(stack):
        check_image(section, f"{path} (section {i})")
    return stack, pixel_size


def write_micrograph(
    path: str | os.PathLike, data: np.ndarray, pixel_size: float | None = None
) -> None:
    """Write a 2D image (or a 3D stack) as a float32 (mode 2) MRC file, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Destination; a ``.gz`` or ``.bz2`` suffix compresses the file.
    data : numpy.ndarray
        2D image or 3D stack of sections; converted to float32.
    pixel_size : float, optional
        Angstrom per pixel stored in the header (0 when None).

    Raises
    ------
    MicrographError
        If ``data`` is not 2D or 3D.
    """
    path = Path(path)
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise MicrographError(f"{path}: cannot write an array of shape {data.shape} as an image")
    suffix = path.suffix.lower()
    compression = {".gz": "gzip", ".bz2": "bzip2"}.get(suffix)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True, compression=compression) as mrc:
            mrc.set_data(data.astype(np.float32, copy=False))
            if data.ndim == 3:
                mrc.set_image_stack()
            if pixel_size is not None:
                mrc.voxel_size = float(pixel_size)
    logger.debug("wrote %s %s", path, data.shape)
