"""What every dock shares: the viewer, Run / Stop, one worker at a time, progress and feedback.

A dock subclasses :class:`DockWidget`, builds its inputs, then calls :meth:`DockWidget._start`
with a core generator. The generator runs in a ``napari.qt.threading.thread_worker`` (or
synchronously when ``DEEPPICKER_NOTHREADS=1``); what it yields and returns comes back to the main
thread, which alone touches layers and widgets. Errors raised by the generator are caught in the
worker and shown on the main thread with ``show_error``, so that the message is the core's own
and a ``RuntimeError`` (e.g. from torch) cannot leave the worker silently aborted.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info
from psygnal import Signal
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy

from napari_deeppicker.core.errors import DeepPickerError

log = logging.getLogger(__name__)

NOTHREADS_ENV = "DEEPPICKER_NOTHREADS"
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class Failure:
    """An exception raised by a worker's generator, carried to the main thread."""

    exc: BaseException


def guarded(gen: Iterator) -> Generator:
    """Run ``gen`` to the end, returning its value, or a :class:`Failure` instead of raising."""
    try:
        return (yield from gen)
    except Exception as exc:  # shown to the user on the main thread
        return Failure(exc)


def error_message(exc: BaseException) -> str:
    """The text shown for an error: the core's own message, else the type and the message."""
    if isinstance(exc, DeepPickerError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def nothreads() -> bool:
    """True when ``DEEPPICKER_NOTHREADS`` asks for synchronous runs (debugging)."""
    return os.environ.get(NOTHREADS_ENV, "").strip().lower() in ("1", "true", "yes")


class ModelRegistry:
    """Models held in memory for this session (trained or retrained), by name.

    The Train dock adds what it trains; the Pick dock lists these next to the shipped model.
    """

    changed = Signal()

    def __init__(self) -> None:
        self._models: dict = {}

    def add(self, name: str, model) -> str:
        """Store ``model`` under ``name`` (replacing a model of that name); return the name."""
        self._models[name] = model
        self.changed.emit()
        return name

    def get(self, name: str):
        """The model called ``name`` (KeyError when there is none)."""
        return self._models[name]

    def names(self) -> list[str]:
        """Names of the stored models, oldest first."""
        return list(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models


MODELS = ModelRegistry()


def device_text(name: str) -> str:
    """Which device ``name`` ("auto", "cpu", "cuda") resolves to on this machine."""
    from napari_deeppicker.core.model import select_device

    try:
        return f"uses {select_device(name)}"
    except ValueError as exc:
        return str(exc)


def text_label(value: str = "", label: str = "") -> Label:
    """A left-aligned, word-wrapped label that takes the row's width (status lines, results)."""
    widget = Label(value=value, label=label)
    widget.native.setWordWrap(True)
    widget.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    widget.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return widget


def row(*widgets, label: str = "") -> Container:
    """Widgets side by side, as one labelled row of the dock."""
    container = Container(widgets=widgets, layout="horizontal", labels=False, label=label)
    container.margins = (0, 0, 0, 0)
    return container


def _release(connection_lists: tuple, workers: list) -> None:
    """Stop ``workers``; undo ``(signal, callback)`` connections to objects outliving a dock."""
    for worker in workers:
        worker.quit()
    for connections in connection_lists:
        while connections:
            signal, callback = connections.pop()
            try:
                signal.disconnect(callback)
            except (ValueError, RuntimeError, TypeError):
                log.debug("already disconnected: %s", callback)


class DockWidget(Container):
    """Base of the docks: Run / Stop buttons, a progress bar, a status line and the worker.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers the dock reads and writes.
    run_text : str
        Text of the Run button.
    """

    def __init__(self, viewer, run_text: str = "Run") -> None:
        super().__init__(labels=True)
        self.native.setMinimumWidth(360)
        self.viewer = viewer
        self._worker = None
        self._gen = None
        self._handlers: dict[str, Callable] = {}
        self.run_button = PushButton(text=run_text)
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = text_label(label="status")
        self.run_button.changed.connect(self._on_run_clicked)
        self.stop_button.changed.connect(self._on_stop_clicked)
        self.native_parent_changed.connect(self._on_parent_changed)
        self._busy_widgets: list = [self.run_button]
        self._connections: list = []
        self._run_connections: list = []
        self._workers: list = []
        # When the window closes, Qt deletes the widgets without a parent change: let go then too.
        self._release = functools.partial(_release, (self._connections, self._run_connections),
                                          self._workers)
        self.native.destroyed.connect(self._release)
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.reordered):
            self._connect(event, self.reset_choices)

    def _connect(self, signal, callback) -> None:
        """Connect to a signal of an object that lives longer than this dock."""
        signal.connect(callback)
        self._connections.append((signal, callback))

    def _controls(self) -> list:
        """Run/Stop row, progress and status, for the subclass to place in its layout."""
        return [row(self.run_button, self.stop_button), self.progress, self.status]

    @property
    def running(self) -> bool:
        """True while a job runs."""
        return self._gen is not None

    def _set_running(self, running: bool) -> None:
        for widget in self._busy_widgets:
            widget.enabled = not running
        self.stop_button.enabled = running and not nothreads()

    def _start(self, gen: Iterator, *, on_yield: Callable, on_return: Callable,
               on_abort: Callable | None = None, total: int = 0, text: str = "") -> None:
        """Run the core generator ``gen`` in a worker and route its results to the handlers.

        Parameters
        ----------
        gen : iterator
            Yields progress (passed to ``on_yield``) and returns the result (to ``on_return``).
        on_yield, on_return : callable
            Called on the main thread.
        on_abort : callable, optional
            Called on the main thread when Stop ended the run early.
        total : int
            Maximum of the progress bar (the handlers set its value).
        text : str
            Status line while it runs.
        """
        if self.running:
            show_info("napari-deeppicker: a job is already running in this panel")
            return
        self._handlers = {"yield": on_yield, "return": on_return, "abort": on_abort}
        self._gen = guarded(gen)
        self.progress.max = max(total, 1)
        self.progress.value = 0
        self.status.value = text
        self._set_running(True)
        if nothreads():
            self._run_synchronously()
            return
        from napari.qt.threading import thread_worker

        worker = thread_worker(self._iterate, start_thread=False,
                               connect={"errored": self._on_worker_errored})()
        # Kept so that a window closed mid-run does not call back into deleted widgets.
        for signal, slot in ((worker.yielded, self._on_worker_yielded),
                             (worker.returned, self._on_worker_returned),
                             (worker.aborted, self._on_worker_aborted),
                             (worker.finished, self._on_worker_finished)):
            signal.connect(slot)
            self._run_connections.append((signal, slot))
        self._worker = worker
        self._workers.append(worker)
        worker.start()

    def _iterate(self) -> Generator:
        """The worker's generator: the guarded core generator of the current run."""
        return (yield from self._gen)

    def _run_synchronously(self) -> None:
        try:
            while True:
                self._on_worker_yielded(next(self._gen))
        except StopIteration as stop:
            self._on_worker_returned(stop.value)
        except Exception as exc:  # an error in a main-thread handler
            self._on_worker_errored(exc)
        finally:
            self._on_worker_finished()

    def _on_worker_yielded(self, value) -> None:
        self._call("yield", value)

    def _on_worker_returned(self, value) -> None:
        if isinstance(value, Failure):
            self._report(value.exc)
        else:
            self.progress.value = self.progress.max
            self._call("return", value)

    def _on_worker_aborted(self) -> None:
        self.status.value = "stopped"
        if self._handlers.get("abort") is not None:
            self._call("abort")

    def _on_worker_errored(self, exc: BaseException) -> None:
        self._report(exc)

    def _on_worker_finished(self) -> None:
        gen, worker, self._gen, self._worker = self._gen, self._worker, None, None
        if worker is not None:
            self._workers.remove(worker)
            self._run_connections.clear()
        if gen is not None:
            gen.close()
        self._set_running(False)

    def _call(self, key: str, *args) -> None:
        """Run a result handler; an exception there is reported, never raised into Qt."""
        try:
            self._handlers[key](*args)
        except Exception as exc:
            self._report(exc)

    def _report(self, exc: BaseException) -> None:
        log.error("%s failed: %s", type(self).__name__, exc, exc_info=exc)
        self.status.value = f"failed: {error_message(exc)}"[:200]
        show_error(error_message(exc))

    def _fail(self, message: str) -> None:
        """Report a problem found before starting (bad input) without raising."""
        self.status.value = message[:200]
        show_error(message)

    def _on_run_clicked(self) -> None:
        """Start the dock's job; every dock (Pick, Train, Evaluate) defines its own."""
        raise NotImplementedError(f"{type(self).__name__} defines no job")

    def _on_stop_clicked(self) -> None:
        if self._worker is not None:
            self.status.value = "stopping at the next step..."
            self._worker.quit()

    def _on_parent_changed(self, parent) -> None:
        if parent is None:
            self._on_close()

    def _on_close(self) -> None:
        """The dock was closed: stop the job and let go of the viewer's events."""
        self._release()
