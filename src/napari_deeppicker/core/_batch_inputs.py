"""Inputs of batch picking: folders, globs, micrograph files, RELION STAR files and file lists.

Import these through :mod:`napari_deeppicker.core.batch`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ._files import file_stem, list_micrographs
from .errors import MicrographError

logger = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".lst")
_NAME_LABEL = "rlnMicrographName"


@dataclass(frozen=True)
class MicrographItem:
    """One micrograph of a batch.

    Attributes
    ----------
    path : pathlib.Path
        The file to read.
    name : str
        The name to record in combined outputs (``_rlnMicrographName``): the
        ``_rlnMicrographName`` of a RELION STAR input as it is written there, otherwise the
        path as given.
    root : pathlib.Path
        The folder that ``name`` and the coordinates paths of combined outputs are relative
        to: the RELION project folder for STAR inputs, otherwise the current folder.
    """

    path: Path
    name: str
    root: Path

    @property
    def stem(self) -> str:
        """File stem (``mic1`` for ``mic1.mrc``)."""
        return file_stem(self.path)


def _as_list(inputs) -> list:
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    return list(inputs)


def _read_star_names(path: Path) -> list[str]:
    """``_rlnMicrographName`` values of a STAR file (the ``micrographs`` block preferred)."""
    import starfile

    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=[_NAME_LABEL])
    except (ValueError, TypeError, IndexError, KeyError, UnicodeDecodeError, OSError) as err:
        raise MicrographError(f"{path}: not a readable STAR file ({err})") from err
    tables = {name: block for name, block in blocks.items() if hasattr(block, "columns")}
    with_names = [name for name, table in tables.items() if _NAME_LABEL in table.columns]
    if not with_names:
        raise MicrographError(f"{path}: no loop with _{_NAME_LABEL} (not a micrographs STAR file?)")
    table = tables["micrographs" if "micrographs" in with_names else with_names[0]]
    names = [str(v) for v in table[_NAME_LABEL]]
    # Particle STAR files repeat each micrograph once per particle: keep the first occurrence.
    return list(dict.fromkeys(names))


def find_project_dir(star: Path, first_name: str) -> Path:
    """The folder that the micrograph names of a RELION STAR file are relative to.

    RELION writes paths relative to its project folder. It is the current folder when RELION
    (or this command) runs there; otherwise it is looked for among the STAR file's ancestors
    (``Project/CtfFind/job003/micrographs_ctf.star`` -> ``Project``).

    Raises
    ------
    MicrographError
        If the first micrograph is found under none of the candidates.
    """
    if Path(first_name).is_absolute():
        return Path.cwd()
    candidates = [Path.cwd(), *star.resolve().parents]
    for folder in candidates:
        if (folder / first_name).is_file():
            return folder
    raise MicrographError(
        f"{star}: cannot find its first micrograph {first_name} relative to the current folder "
        "or any folder above the STAR file; run from the RELION project folder"
    )


def _star_items(star: Path) -> list[MicrographItem]:
    names = _read_star_names(star)
    if not names:
        logger.warning("%s lists no micrograph", star)
        return []
    root = find_project_dir(star, names[0])
    items = []
    for name in names:
        path = Path(name) if Path(name).is_absolute() else root / name
        if not path.is_file():
            raise MicrographError(f"{star}: micrograph {name} not found (looked for {path})")
        items.append(MicrographItem(path, name, root))
    return items


def _list_items(listing: Path) -> list[MicrographItem]:
    items = []
    with open(listing, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            path = Path(text)
            if not path.is_absolute() and not path.is_file() and (listing.parent / text).is_file():
                path = listing.parent / text
            if not path.is_file():
                raise MicrographError(f"{listing}, line {number}: no such micrograph {text}")
            items.append(MicrographItem(path, text, Path.cwd()))
    return items


def resolve_inputs(inputs: str | os.PathLike | Iterable[str | os.PathLike]) -> list[MicrographItem]:
    """Turn command-line inputs into the list of micrographs to pick.

    Parameters
    ----------
    inputs : path or iterable of paths
        Micrograph files, folders (their ``*.mrc`` and ``*.mrc.gz``), glob patterns, STAR files
        with ``_rlnMicrographName`` (a RELION ``micrographs_ctf.star``; names relative to the
        RELION project folder, see :func:`find_project_dir`) and text files (``.txt``, ``.lst``)
        listing one micrograph per line (relative to the current folder, or else to the
        list's folder; blank lines and ``#`` comments ignored).

    Returns
    -------
    list of MicrographItem
        In the given order, without duplicate files.

    Raises
    ------
    MicrographError
        If an input does not exist, a listed micrograph is missing, or nothing is found.
    """
    items: list[MicrographItem] = []
    plain: list = []

    def flush() -> None:
        if plain:
            found = list_micrographs(plain)
            items.extend(MicrographItem(p, os.fspath(p), Path.cwd()) for p in found)
            plain.clear()

    for entry in _as_list(inputs):
        path = Path(entry)
        suffix = path.suffix.lower()
        if path.is_file() and (suffix == ".star" or suffix in LIST_SUFFIXES):
            flush()
            items.extend(_star_items(path) if suffix == ".star" else _list_items(path))
        else:
            plain.append(entry)
    flush()
    unique: dict[Path, MicrographItem] = {}
    for item in items:
        unique.setdefault(item.path.resolve(), item)
    if not unique:
        shown = ", ".join(os.fspath(i) for i in _as_list(inputs)) or "(no input)"
        raise MicrographError(f"no micrograph found in {shown}")
    return list(unique.values())
