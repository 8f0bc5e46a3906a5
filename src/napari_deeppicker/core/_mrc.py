"""Low-level MRC loading for ``core.io``: header checks before mrcfile touches the data.

The header is checked here first (identifier, mode, sizes, extended header, file length) so
that a corrupt header gives a clear message instead of a huge allocation or an obscure error.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import zlib
from pathlib import Path

import mrcfile
import mrcfile.dtypes
import mrcfile.utils
import numpy as np

from .errors import MicrographError

logger = logging.getLogger(__name__)

HEADER_BYTES = 1024
_MAX_RATIO = 1100  # deflate cannot compress better than ~1032:1 (bzip2 is bounded too)
_IMOD_STAMP = 1146047817
_READ_ERRORS = (ValueError, OSError, EOFError, ArithmeticError, MemoryError, IndexError, zlib.error)


def _compression(path: Path) -> str | None:
    with open(path, "rb") as fh:
        magic = fh.read(3)
    if magic[:2] == b"\x1f\x8b":
        return "gzip"
    return "bzip2" if magic == b"BZh" else None


def _read_header(path: Path, compression: str | None) -> tuple[np.record, str, bool]:
    """Return the parsed header, its byte order and whether its machine stamp was recognised."""
    opener = {"gzip": gzip.open, "bzip2": bz2.open}.get(compression, open)
    with opener(path, "rb") as fh:
        raw = fh.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES:
        raise ValueError(f"only {len(raw)} bytes, shorter than an MRC header ({HEADER_BYTES})")
    if raw[208:212] != b"MAP ":
        raise ValueError("no 'MAP ' identifier: not an MRC file, or the header is corrupt")
    header = np.frombuffer(raw, dtype=mrcfile.dtypes.HEADER_DTYPE).view(np.recarray)[0]
    try:
        orders = [mrcfile.utils.byte_order_from_machine_stamp(header.machst)]
        known = True
    except ValueError:
        orders, known = ["<", ">"], False  # what mrcfile's permissive mode tries
    for order in orders:
        candidate = np.frombuffer(raw, dtype=mrcfile.dtypes.HEADER_DTYPE.newbyteorder(order))
        candidate = candidate.view(np.recarray)[0]
        try:
            mrcfile.utils.dtype_from_mode(candidate.mode)
        except ValueError:
            continue
        return candidate, order, known
    raise ValueError(f"unknown MRC mode {int(header.mode)}")


def _check_layout(path: Path, header: np.record, compression: str | None) -> None:
    """Raise ValueError when the header's sizes are impossible or exceed the file."""
    dtype = mrcfile.utils.dtype_from_mode(header.mode)
    if dtype.kind == "c":
        raise ValueError(f"complex data (MRC mode {int(header.mode)}) is not an image")
    nsymbt = int(header.nsymbt)
    sizes = {name: int(header[name]) for name in ("nx", "ny", "nz")}
    if min(sizes.values()) < 1 or nsymbt < 0:
        raise ValueError(f"impossible sizes in the header ({sizes}, extended header {nsymbt})")
    shape = mrcfile.utils.data_shape_from_header(header)
    if min(shape) < 1:
        raise ValueError(f"impossible data shape {shape} in the header")
    expected = HEADER_BYTES + nsymbt + int(np.prod(shape, dtype=object)) * dtype.itemsize
    size = path.stat().st_size
    if compression is None and size < expected:
        raise ValueError(
            f"the file is truncated: the header announces {expected} bytes, the file has {size}"
        )
    if compression is not None and expected > _MAX_RATIO * size + HEADER_BYTES:
        raise ValueError(f"truncated or corrupt: the header announces {expected} bytes of data")


def _is_unsigned_mode0(header) -> bool:
    """IMOD marks unsigned bytes in mode 0 with a stamp and flag at bytes 152-159 of the header."""
    stamp, flags = np.frombuffer(header.tobytes()[152:160], dtype=header.mode.dtype)
    return int(header.mode) == 0 and int(stamp) == _IMOD_STAMP and bool(int(flags) & 1)


def load_mrc(path: Path, *, mmap: bool, large_bytes: int) -> tuple[np.ndarray, float | None, bool]:
    """Return (data as stored, pixel size, whether to use the data without copying them).

    Uncompressed files are always opened as a memory map; data of at least ``large_bytes`` bytes
    are flagged for use as they are (read-only) when ``mmap`` is True, and so are decompressed
    data (already in memory) of that size. Smaller data are meant to be copied.

    Raises
    ------
    MicrographError
        If the file is missing, not MRC, corrupt or truncated.
    """
    if not path.is_file():
        raise MicrographError(f"{path}: no such file")
    try:
        compression = _compression(path)
        header, order, known_stamp = _read_header(path, compression)
        _check_layout(path, header, compression)
        if not known_stamp:
            endian = "little" if order == "<" else "big"
            logger.warning("%s: unrecognised machine stamp; assuming %s-endian data", path, endian)
        opener = mrcfile.open if compression else mrcfile.mmap
        # The header was checked above; permissive only lets mrcfile get past a bad machine stamp.
        with opener(path, mode="r", permissive=not known_stamp) as mrc:
            data = mrc.data
            if data is None:
                raise ValueError("the data block cannot be read")
            # The header holds float32: keep its shortest decimal form (7.08, not 7.0799999...).
            voxel = float(str(np.float32(mrc.voxel_size.x)))
            if _is_unsigned_mode0(mrc.header):
                data = data.view(np.uint8)
    except _READ_ERRORS as err:
        raise MicrographError(f"{path}: not a readable MRC file ({err})") from err
    pixel_size = voxel if np.isfinite(voxel) and voxel > 0 else None
    keep = data.nbytes >= large_bytes and (mmap or compression is not None)
    return data, pixel_size, keep
