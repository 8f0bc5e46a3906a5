"""File-level helpers of ``core.io``: atomic writes, file stems, listing and pairing files.

Import these through :mod:`napari_deeppicker.core.io`.
"""

from __future__ import annotations

import glob
import logging
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import CoordinatesError, MicrographError

logger = logging.getLogger(__name__)

_COMPRESSION_SUFFIXES = (".gz", ".bz2")
_COORD_SUFFIXES = (".star", ".box", ".csv", ".txt", ".tsv")
_IMAGE_SUFFIXES = (".mrc", ".mrcs", ".tif", ".tiff", ".eer", ".png", ".jpg", ".jpeg")
_GLOB_CHARS = frozenset("*?[")

PathLike = str | os.PathLike


def file_stem(name: PathLike) -> str:
    """Return the stem of a micrograph or coordinates file name.

    Folders are dropped, then a compression suffix (``.gz``, ``.bz2``), a coordinates suffix
    (``.star``, ``.box``, ...) and an image suffix (``.mrc``, ...), so that ``a/mic1.mrc.gz``,
    ``mic1.star`` and ``mic1.mrc.star`` all give ``mic1``. Other dots are kept.

    Parameters
    ----------
    name : str or os.PathLike
        A path, or a name as stored in a coordinates file (e.g. ``_rlnMicrographName``).

    Returns
    -------
    str
        The stem.
    """
    stem = PurePosixPath(os.fspath(name).replace("\\", "/")).name
    for suffixes in (_COMPRESSION_SUFFIXES, _COORD_SUFFIXES, _IMAGE_SUFFIXES):
        for suffix in suffixes:
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                stem = stem[: -len(suffix)]
                break
    return stem


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable on POSIX; folders cannot be opened this way on Windows.
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    The temporary file is created in the same folder (so that :func:`os.replace` is atomic) with
    the permissions a new file would get (the umask applies), or those of the file it replaces.
    On an exception the temporary file is removed and an existing ``path`` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        The final destination.

    Yields
    ------
    pathlib.Path
        The temporary file (already created, empty) to write.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if path.exists():
            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@contextmanager
def atomic_write(path: PathLike, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """Open a file for writing so that ``path`` only ever holds a complete file.

    Data go to a temporary file in the same folder, which is flushed, fsynced and moved onto
    ``path`` with :func:`os.replace` when the ``with`` block ends without error. If the block
    raises, the temporary file is removed and any existing file at ``path`` is left untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    mode : str
        ``"w"`` (text, the default) or ``"wb"`` (binary); ``"wt"`` is accepted as ``"w"``.
    **open_kwargs
        Passed to :func:`open` (e.g. ``encoding``, ``newline``).

    Yields
    ------
    file object
        The open temporary file.

    Raises
    ------
    ValueError
        If ``mode`` is not a write mode.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write supports the modes 'w' and 'wb', not {mode!r}")
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as fh:
        yield fh
        fh.flush()


def _as_list(inputs: PathLike | Iterable[PathLike]) -> list[PathLike]:
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    return list(inputs)


def list_micrographs(inputs: PathLike | Iterable[PathLike]) -> list[Path]:
    """List micrograph files from files, folders and glob patterns.

    Parameters
    ----------
    inputs : str, os.PathLike or iterable of them
        Files (taken as they are), folders (their ``*.mrc`` and ``*.mrc.gz`` files, sorted) and
        glob patterns (their matches, sorted).

    Returns
    -------
    list of pathlib.Path
        The micrographs in the given order, without duplicates.

    Raises
    ------
    MicrographError
        If an input that is not a glob pattern does not exist, or nothing is found at all.
    """
    found: list[Path] = []
    for item in _as_list(inputs):
        path = Path(item)
        if path.is_dir():
            matches = sorted(
                p for p in path.iterdir()
                if p.is_file() and p.name.lower().endswith((".mrc", ".mrc.gz"))
            )
            if not matches:
                logger.warning("no *.mrc or *.mrc.gz files in %s", path)
            found.extend(matches)
        elif path.is_file():
            found.append(path)
        elif _GLOB_CHARS & set(os.fspath(item)):
            matches = sorted(Path(p) for p in glob.glob(os.fspath(item)) if Path(p).is_file())
            if not matches:
                logger.warning("the pattern %s matches no file", item)
            found.extend(matches)
        else:
            raise MicrographError(f"{path}: no such file or folder")
    unique = list(dict.fromkeys(found))
    if not unique:
        shown = ", ".join(os.fspath(i) for i in _as_list(inputs)) or "(no input)"
        raise MicrographError(f"no micrograph (*.mrc, *.mrc.gz) found in {shown}")
    return unique


def match_stem(coords_stem: str, mic_stems: Iterable[str]) -> str | None:
    """Return the micrograph stem a coordinates stem belongs to, or None.

    A coordinates stem matches a micrograph stem when they are equal, or when it starts with the
    micrograph stem followed by ``_`` (``mic1_autopick`` -> ``mic1``). The exact match wins;
    otherwise the longest matching micrograph stem.
    """
    stems = set(mic_stems)
    if coords_stem in stems:
        return coords_stem
    prefixes = [s for s in stems if coords_stem.startswith(s + "_")]
    return max(prefixes, key=len) if prefixes else None


def pair_files(
    micrographs: Iterable[PathLike], coord_files: Iterable[PathLike]
) -> dict[Path, Path]:
    """Pair micrographs with coordinates files by file stem.

    ``mic1.mrc`` pairs with ``mic1.star`` and with ``mic1_autopick.star`` (a suffix after
    ``_``); an exact stem match is preferred, and the longest micrograph stem when several match.

    Parameters
    ----------
    micrographs : iterable of path
        Micrograph files.
    coord_files : iterable of path
        Coordinates files.

    Returns
    -------
    dict of pathlib.Path to pathlib.Path
        Micrograph -> its coordinates file, in the order of ``micrographs``; micrographs without
        coordinates are left out, coordinates files without a micrograph are ignored (logged).

    Raises
    ------
    CoordinatesError
        If two coordinates files match one micrograph equally well.
    """
    mics = [Path(m) for m in micrographs]
    by_stem: dict[str, Path] = {}
    for mic in mics:
        first = by_stem.setdefault(file_stem(mic), mic)
        if first != mic:
            logger.warning("%s and %s have the same stem; using the first", first, mic)
    candidates: dict[Path, list[tuple[bool, Path]]] = {}
    for coords in (Path(c) for c in coord_files):
        stem = file_stem(coords)
        mic_stem = match_stem(stem, by_stem)
        if mic_stem is None:
            logger.info("%s matches no micrograph", coords)
            continue
        candidates.setdefault(by_stem[mic_stem], []).append((stem == mic_stem, coords))
    pairs: dict[Path, Path] = {}
    for mic in mics:
        found = candidates.get(mic)
        if not found:
            continue
        best = [c for exact, c in found if exact] or [c for _, c in found]
        if len(best) > 1:
            names = ", ".join(str(c) for c in best)
            raise CoordinatesError(f"several coordinates files match micrograph {mic}: {names}")
        pairs[mic] = best[0]
    return pairs
