"""A matplotlib canvas that sits inside a magicgui container, styled like the napari theme."""

from __future__ import annotations

from magicgui.widgets import Container
from matplotlib.ticker import MaxNLocator


def _theme_colours(viewer) -> tuple[str, str, str]:
    """(background, text, grid) colours of the viewer's theme (light grey on dark by default)."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(viewer.theme)
        return theme.background.as_hex(), theme.text.as_hex(), theme.highlight.as_hex()
    except (ValueError, AttributeError, KeyError):
        return "#262930", "#f0f1f2", "#61696e"


class PlotCanvas(Container):
    """An embedded matplotlib figure (``FigureCanvasQTAgg``) with one set of axes.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        For the theme colours.
    height : int
        Minimum height in pixels.
    """

    def __init__(self, viewer, height: int = 240) -> None:
        super().__init__(labels=False)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.margins = (0, 0, 0, 0)
        self._bg, self._fg, self._grid = _theme_colours(viewer)
        self.figure = Figure(figsize=(4, 2.6), dpi=90, layout="constrained", facecolor=self._bg)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(height)
        self.native.layout().addWidget(self.canvas)
        self.axes = self.figure.add_subplot()
        self.clear()

    def clear(self, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
        """Empty the axes and restyle them."""
        ax = self.axes
        ax.clear()
        ax.set_facecolor(self._bg)
        for spine in ax.spines.values():
            spine.set_color(self._fg)
        ax.tick_params(colors=self._fg, labelsize=8)
        ax.grid(True, color=self._grid, linewidth=0.5, alpha=0.6)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, numbers of picks
        ax.set_title(title, color=self._fg, fontsize=9)
        ax.set_xlabel(xlabel, color=self._fg, fontsize=8)
        ax.set_ylabel(ylabel, color=self._fg, fontsize=8)

    def legend(self, **kwargs) -> None:
        """A legend in the theme's colours."""
        legend = self.axes.legend(fontsize=7, facecolor=self._bg, edgecolor=self._grid, **kwargs)
        for text in legend.get_texts():
            text.set_color(self._fg)

    def draw(self) -> None:
        """Redraw now (cheap for the few lines drawn here)."""
        self.canvas.draw()
