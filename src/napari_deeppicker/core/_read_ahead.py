"""A reader thread that works a bounded number of items ahead of its consumer.

Used by batch picking so that the next micrographs are read from disk while the network scores
the current one. The queue is bounded, so memory stays constant whatever the number of items.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

_END = object()
_POLL_S = 0.1


class ReadAhead:
    """Iterate over ``(item, read(item), error)`` computed by a background thread, in order.

    At most ``depth`` results wait in the queue (plus the one being read), so memory is bounded.
    An exception raised by ``read`` is passed on as ``error`` (the value is then None) and the
    thread goes on with the next item. Use it as a context manager, or call :meth:`close`, so
    that the thread stops when the consumer stops early.

    Parameters
    ----------
    items : iterable
        What to read, in order.
    read : callable
        ``read(item) -> value``; runs in the reader thread.
    depth : int
        Results read ahead at most (>= 1).
    """

    def __init__(self, items: Iterable, read: Callable[[Any], Any], depth: int = 1) -> None:
        self._items = items
        self._read = read
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="deeppicker-read-ahead",
                                        daemon=True)

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        for item in self._items:
            if self._stop.is_set():
                return
            try:
                entry = (item, self._read(item), None)
            except Exception as err:  # noqa: BLE001 - handed to the consumer, which decides
                entry = (item, None, err)
            if not self._put(entry):
                return
        self._put(_END)

    def __iter__(self) -> Iterator[tuple[Any, Any, BaseException | None]]:
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()
        while True:
            entry = self._queue.get()
            if entry is _END:
                return
            yield entry

    def close(self) -> None:
        """Stop the reader thread (it finishes the item it is reading) and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                logger.warning("the reader thread is still busy reading a file")

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
