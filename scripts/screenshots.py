"""Full-window screenshots of the three docks in use on the real sample micrograph (README).

Opens the packaged beta-galactosidase micrograph with its expert picks, picks it with the shipped
general model, evaluates the picks against the expert coordinates, and trains a small
semi-automated model on the expert picks, saving one screenshot per dock to ``docs/images/``.

Usage (needs a display; on a headless machine)::

    xvfb-run -a -s "-screen 0 1920x1200x24" python scripts/screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_deeppicker._sample_data import REAL_BOX, real_sample
from napari_deeppicker._widgets.evaluate import EvaluateWidget
from napari_deeppicker._widgets.pick import PickWidget
from napari_deeppicker._widgets.train import TrainWidget

ROOT = Path(__file__).resolve().parents[1]


def wait(widget, timeout=900.0):
    """Process Qt events until the dock's worker has finished."""
    start = time.perf_counter()
    while widget.running and time.perf_counter() - start < timeout:
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.01)


def new_viewer():
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    for data, kwargs, kind in real_sample():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    return viewer


def shot(viewer, path: Path, zoom_to=None):
    viewer.reset_view()
    if zoom_to is not None:
        viewer.camera.center, viewer.camera.zoom = zoom_to
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.screenshot(path=str(path), canvas_only=False)
    print("wrote", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    zoom = ((512, 512), 3.0)  # centre of the micrograph, close enough to see single particles

    viewer = new_viewer()
    image = viewer.layers[0]
    reference = viewer.layers[1]
    reference.visible = False
    pick = PickWidget(viewer)
    viewer.window.add_dock_widget(pick, name="Pick particles")
    pick.image.value, pick.box.value = image, REAL_BOX
    pick.run_button.native.click()
    wait(pick)
    pick.threshold.value = 0.95  # the live slider: betagal is crowded, 0.5 keeps too much
    shot(viewer, args.out / "pick_widget.png", zoom)

    evaluate = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(evaluate, name="Evaluate picks")
    evaluate.picks.value = viewer.layers[f"{image.name} picks"]
    evaluate.reference.value = reference
    evaluate.box.value = REAL_BOX
    evaluate.run_button.native.click()
    wait(evaluate)
    shot(viewer, args.out / "evaluate_widget.png", zoom)
    viewer.close()

    viewer = new_viewer()
    image, reference = viewer.layers[0], viewer.layers[1]
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train a picker")
    train.box.value = REAL_BOX
    train.image.value, train.points.value = image, reference
    train.add_pair_button.native.click()
    train.mode.value = train.mode.choices[-1]
    train.epochs.value, train.model_name.value = 12, "betagal (semi-automated)"
    train.run_button.native.click()
    wait(train)
    shot(viewer, args.out / "train_widget.png", zoom)
    viewer.close()


if __name__ == "__main__":
    main()
