"""A temporary circle of the box diameter at the centre of the view, to size the box by eye."""

from __future__ import annotations

import numpy as np

PREVIEW = "box preview"


def show_box_preview(viewer, image, box: float):
    """Show (or update) a ``PREVIEW`` circle of diameter ``box`` at the view centre.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer.
    image : napari.layers.Image or None
        The micrograph whose scale and translate (last two dims) the circle follows.
    box : float
        Diameter in micrograph pixels.

    Returns
    -------
    napari.layers.Points
        The 2D preview layer (shown on every slice of a stack).
    """
    scale = np.asarray(image.scale[-2:]) if image is not None else np.ones(2)
    translate = np.asarray(image.translate[-2:]) if image is not None else np.zeros(2)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    centre = (np.asarray(camera.center[-2:]) - translate) / scale
    if PREVIEW in viewer.layers:
        layer = viewer.layers[PREVIEW]
        layer.scale, layer.translate = scale, translate
        layer.data = centre[None]
        layer.size = box
        return layer
    active = viewer.layers.selection.active  # adding a layer selects it: keep the user's choice
    layer = viewer.add_points(centre[None], name=PREVIEW, size=box, scale=scale,
                              translate=translate, face_color="transparent", border_color="yellow",
                              border_width=0.05, border_width_is_relative=True)
    if active is not None:
        viewer.layers.selection.active = active
    return layer


def remove_box_preview(viewer) -> None:
    """Remove the preview circle if it is there."""
    if PREVIEW in viewer.layers:
        viewer.layers.remove(PREVIEW)
