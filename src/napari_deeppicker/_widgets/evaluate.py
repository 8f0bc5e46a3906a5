"""The Evaluate dock: compare picks with reference particles and show where they agree.

The picks shown at the current threshold are matched one-to-one with the reference (centres
closer than ``radius x box``): precision, recall, F1 and centre error go in the dock, each pick gets
a ``match`` feature (TP / FP, ``hidden`` for picks below the threshold) and is coloured by it,
and reference particles no pick found go to a ``"<image> missed"`` layer. The curve ranks all
picks by score: precision and recall against the number of top picks.
"""

from __future__ import annotations

import logging

import napari
import numpy as np
import pandas as pd
from magicgui.widgets import FileEdit, FloatSpinBox, SpinBox, create_widget
from napari.utils.notifications import show_info

from napari_deeppicker import _layers
from napari_deeppicker._widgets import _jobs
from napari_deeppicker._widgets._base import DockWidget, text_label
from napari_deeppicker._widgets._parameters import EvaluateParameters
from napari_deeppicker._widgets._plot import PlotCanvas

log = logging.getLogger(__name__)

MATCH_COLOURS = {"TP": "lime", "FP": "red", "hidden": "gray"}
MISSED_COLOUR = "orange"


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def results_html(report, box: float) -> str:
    """A small HTML table of the headline numbers of an evaluation report."""
    o = report.overall
    error = f"{_fmt(o['centre_error'])} box ({_fmt(o['centre_error'] * box, 1)} px)"
    rows = [("precision", _fmt(o["precision"])), ("recall", _fmt(o["recall"])),
            ("F1", _fmt(o["f1"])), ("centre error", error),
            ("TP / FP / FN", f"{o['tp']} / {o['fp']} / {o['fn']}"),
            ("picks / reference", f"{o['n_picks']} / {o['n_reference']}")]
    cells = "".join(f"<tr><td>{k}&nbsp;&nbsp;</td><td><b>{v}</b></td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


class EvaluateWidget(DockWidget):
    """Evaluate picks against reference coordinates (a points layer or a coordinates file).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(viewer, run_text="Evaluate")
        self.picks = create_widget(annotation=napari.layers.Points, label="picks")
        self.reference = create_widget(annotation=napari.layers.Points, label="reference",
                                       options={"nullable": True})
        self.reference_file = FileEdit(mode="r", label="or file",
                                       filter="*.star *.box *.csv *.txt *.tsv")
        self.box = SpinBox(value=64, min=2, max=4096, label="box (px)")
        self.radius = FloatSpinBox(value=0.2, min=0.01, max=1.0, step=0.05, label="radius (x box)")
        self.results = text_label(label="results")
        self.plot = PlotCanvas(viewer, height=220)
        self.extend([self.picks, self.reference, self.reference_file, self.box, self.radius,
                     *self._controls(), self.results, self.plot])
        self.picks.changed.connect(self._on_picks_changed)
        self._on_picks_changed(self.picks.value)
        self.report = None
        self._layer = None
        self._plot_curve(None, 0)

    def _on_picks_changed(self, layer) -> None:
        box = _layers.deeppicker_metadata(layer).get("box")
        if box:
            self.box.value = int(round(box))

    def _on_run_clicked(self) -> None:
        params = EvaluateParameters(self.picks.value, self.reference.value,
                                    self.reference_file.value, self.box.value, self.radius.value)
        error = params.validation_error()
        if error:
            self._fail(error)
            return
        self._layer = params.picks
        self._start(_jobs.evaluate_picks(**params.as_core_arguments()), on_yield=self._on_step,
                    on_return=self._on_evaluated, total=2, text="matching...")

    def _on_step(self, message: str) -> None:
        self.progress.value = 1
        self.status.value = message

    def _on_evaluated(self, result: _jobs.Evaluation) -> None:
        report, layer = result.report, self._layer
        self.report = report
        self.results.value = results_html(report, report.box)
        self._colour_matches(layer, result)
        self._show_missed(layer, result)
        self._plot_curve(result.ranked, report.overall["n_picks"])
        o = report.overall
        self.status.value = f"precision {_fmt(o['precision'])}, recall {_fmt(o['recall'])}"
        show_info(f"napari-deeppicker: {layer.name}: precision {_fmt(o['precision'])}, "
                  f"recall {_fmt(o['recall'])}, F1 {_fmt(o['f1'])}")

    def _colour_matches(self, layer, result) -> None:
        match = np.full(len(layer.data), "hidden", dtype=object)
        for key, picks in result.shown.items():
            if key in result.report.matches and len(picks):
                match[picks["row"].to_numpy(int)] = result.report.matches[key].pick_label
        features = layer.features.copy()
        features["match"] = match
        layer.features = features
        # Through direct colours first: napari validates the new property in the current
        # (continuous) mode otherwise, and fails on strings.
        layer.border_color = "white"
        layer.border_color_cycle = MATCH_COLOURS
        layer.border_color = "match"

    def _show_missed(self, layer, result) -> None:
        parts = []
        for key, refs in result.reference.items():
            m = result.report.matches.get(key)
            if m is None or len(refs) == 0:
                continue
            missed = refs[np.asarray(m.ref_label) == "missed"][["x", "y"]]
            parts.append(missed.assign(slice=int(key)) if result.stack else missed)
        missed = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            {"x": [], "y": [], **({"slice": pd.Series(dtype=int)} if result.stack else {})})
        image = layer.name.removesuffix(" picks")
        source = self.viewer.layers[image] if image in self.viewer.layers else layer
        data, kwargs, kind = _layers.points_layer_data(
            missed, name=f"{image} missed", box=result.report.box, image_layer=source,
            source="reference")
        kwargs.update(border_color=MISSED_COLOUR, symbol="square")
        _layers.update_or_add(self.viewer, (data, kwargs, kind))

    def _plot_curve(self, ranked, n_shown: int) -> None:
        plot = self.plot
        plot.clear(title="precision and recall vs number of picks", xlabel="number of top picks",
                   ylabel="fraction")
        if ranked is not None and len(ranked.curve):
            curve = ranked.curve
            plot.axes.plot(curve["k"], curve["precision"], label="precision")
            plot.axes.plot(curve["k"], curve["recall"], label="recall")
            n_ref = ranked.overall["n_reference"]
            if n_ref:
                plot.axes.axvline(n_ref, color="grey", ls="--", lw=0.8, label=f"{n_ref} reference")
            if n_shown:
                plot.axes.axvline(n_shown, color="lime", ls=":", lw=1.0, label=f"{n_shown} shown")
            plot.axes.set_ylim(0, 1.02)
            plot.legend(loc="lower right")
        plot.draw()
