"""Helpers shared by the ``deeppicker`` subcommands: messages, logging, devices, JSON files.

Messages for the user go to stderr through :func:`tqdm.tqdm.write`, so that they do not tear a
progress bar apart; results (tables, JSON) go to stdout.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from napari_deeppicker.core.errors import DeepPickerError

PROG = "deeppicker"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # the shell's code for a command stopped by SIGINT
_LEVELS = {0: logging.WARNING, 1: logging.INFO}


def note(message: str) -> None:
    """Print ``deeppicker: <message>`` to stderr without breaking a running progress bar."""
    tqdm.write(f"{PROG}: {message}", file=sys.stderr)


def error(message: object) -> None:
    """Print ``deeppicker: error: <message>`` to stderr."""
    tqdm.write(f"{PROG}: error: {message}", file=sys.stderr)


class _TqdmHandler(logging.Handler):
    """Logging handler writing through tqdm to the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


@contextmanager
def cli_logging(verbosity: int) -> Iterator[None]:
    """Show the package's log records on stderr while the command runs.

    Parameters
    ----------
    verbosity : int
        0: warnings and errors only; 1 (``-v``): also progress notes; 2 (``-vv``): debugging.
    """
    logger = logging.getLogger("napari_deeppicker")
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))
    old_level = logger.level
    logger.setLevel(_LEVELS.get(verbosity, logging.DEBUG))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def resolve_device(name: str | None):
    """Turn a ``--device`` value into a :class:`torch.device` and tell the user which one it is.

    Raises
    ------
    DeepPickerError
        If the device is unknown or not available on this machine.
    """
    from napari_deeppicker.core.model import select_device

    try:
        device = select_device(name)
    except ValueError as err:
        raise DeepPickerError(str(err)) from err
    note(f"using device {device}")
    return device


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    from napari_deeppicker.core.io import atomic_write

    with atomic_write(path) as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.write("\n")


def progress_bar(**kwargs) -> tqdm:
    """A tqdm progress bar on stderr (tqdm's defaults otherwise)."""
    return tqdm(file=sys.stderr, **kwargs)
