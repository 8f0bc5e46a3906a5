"""The docks' shared worker lifecycle: errors become notifications, the UI always re-enables."""

from __future__ import annotations

import pytest

from napari_deeppicker._widgets import _base
from napari_deeppicker._widgets._base import DockWidget, ModelRegistry

TIMEOUT = 30_000


class Dummy(DockWidget):
    """A dock whose job is a given generator; records what reaches the main thread."""

    def __init__(self, viewer, job):
        super().__init__(viewer)
        self.extend(self._controls())
        self.job, self.seen, self.result = job, [], None

    def _on_run_clicked(self):
        self._start(self.job(), on_yield=self.seen.append, on_return=self._on_done, total=3)

    def _on_done(self, value):
        self.result = value


def failing(exc):
    def job():
        yield 1
        raise exc
    return job


@pytest.fixture
def errors(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(_base, "show_error", seen.append)
    return seen


@pytest.mark.parametrize("threads", [True, False])
@pytest.mark.parametrize("exc", [RuntimeError("torch broke"), ValueError("bad value")])
def test_errors_in_the_job_are_notified(qtbot, make_napari_viewer, errors, monkeypatch, threads,
                                        exc):
    if not threads:
        monkeypatch.setenv("DEEPPICKER_NOTHREADS", "1")
    widget = Dummy(make_napari_viewer(), failing(exc))
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert errors == [f"{type(exc).__name__}: {exc}"]
    assert widget.seen == [1] and widget.result is None
    assert widget.run_button.enabled and not widget.stop_button.enabled
    assert widget.status.value.startswith("failed:")


def test_results_reach_the_main_thread(qtbot, make_napari_viewer):
    def job():
        for i in range(3):
            yield i
        return "done"

    widget = Dummy(make_napari_viewer(), job)
    widget.run_button.native.click()
    assert widget.running and not widget.run_button.enabled and widget.stop_button.enabled
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert widget.seen == [0, 1, 2] and widget.result == "done"
    assert widget.progress.value == widget.progress.max == 3


def test_an_error_in_a_handler_is_notified(qtbot, make_napari_viewer, errors):
    def job():
        yield "x"
        return 1

    widget = Dummy(make_napari_viewer(), job)
    widget._on_done = lambda value: 1 / 0
    widget.run_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=TIMEOUT)
    assert errors == ["ZeroDivisionError: division by zero"] and widget.run_button.enabled


def test_registry_signals_changes():
    registry = ModelRegistry()
    calls = []
    registry.changed.connect(lambda: calls.append(1))
    registry.add("a", object())
    registry.add("b", object())
    assert registry.names() == ["a", "b"] and "a" in registry and calls == [1, 1]
