"""``deeppicker demo``: pick simulated micrographs of an unseen shape, score them, show them."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from napari_deeppicker._cli_common import note, resolve_device
from napari_deeppicker._cli_data import load_pairs, simulate
from napari_deeppicker._cli_pick import pick_files
from napari_deeppicker._cli_train import run_training
from napari_deeppicker.core.errors import DeepPickerError, ModelFileError

logger = logging.getLogger(__name__)

BOX = 64
PLUGIN = "napari-deeppicker"
N_TRAIN_MICROGRAPHS = 8
# Shapes the demo prefers to pick, best first: the first one the model was not trained on is used.
DEMO_SHAPES = ("globular", "ring", "dumbbell", "elongated", "multilobe", "shell", "small")


def display_available() -> bool:
    """Whether a window can be opened: on macOS and Windows, or with $DISPLAY / $WAYLAND_DISPLAY."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def trained_names(model) -> str:
    """Names of the training sets of a model (lower case, joined), to tell which shapes it saw."""
    meta = model.metadata
    sets = [s.get("name", "") for s in (meta.get("training") or {}).get("sets", [])]
    sets += [d.get("name", "") for d in meta.get("datasets") or []]
    recipe = (meta.get("general") or {}).get("recipe") or {}
    if recipe.get("synthetic"):  # the general model's simulated sets draw from these families
        sets += list(recipe.get("shapes") or [])
    return " ".join(sets).lower()


def quick_model(outdir: Path, shapes, size: int, seconds: float, seed: int, device):
    """Train a small model on simulated micrographs of ``shapes`` for about ``seconds``."""
    from napari_deeppicker.core.io import read_coordinates_by_micrograph
    from napari_deeppicker.core.model import save_model
    from napari_deeppicker.core.training import TrainConfig, Trainer, TrainingSet

    data = outdir / "train"
    paths = simulate(data, N_TRAIN_MICROGRAPHS, size, seed=seed + 1000, shapes=shapes, box=BOX)
    coords = read_coordinates_by_micrograph(data / "coords")
    name = f"simulated {', '.join(shapes)}"
    tset = TrainingSet(paths, [coords[p.stem] for p in paths], BOX, name=name)
    trainer = Trainer([tset], TrainConfig(epochs=100, patience=100, seed=seed, device=str(device)))
    run_training(trainer, time_limit=seconds)
    model = trainer.best_model
    model.metadata["datasets"] = [{"name": tset.name, "micrographs": str(data / "micrographs"),
                                   "coords": str(data / "coords"), "box": BOX}]
    save_model(model, outdir / "quick_model.safetensors")
    return model


def show_in_napari(paths, picked: dict, refs: dict, picks_dir: Path) -> None:
    """Open napari with the micrographs, reference, picks, score maps and the plugin's docks."""
    try:
        import napari

        viewer = napari.Viewer(title="napari-deeppicker demo")
    except Exception as err:  # noqa: BLE001 - any Qt/OpenGL/display failure; the demo succeeded
        note(f"napari could not start ({type(err).__name__}: {err}); "
             f"the results are in {picks_dir.parent}")
        return
    from napari_deeppicker import _layers
    from napari_deeppicker.core.io import read_micrograph
    from napari_deeppicker.core.picking import ScoreMap

    for k, path in enumerate(paths):
        mic = read_micrograph(path)
        image = viewer.add_image(mic.data, name=mic.name, visible=k == 0, metadata={
            _layers.METADATA_KEY: _layers.image_layer_metadata(path, mic.pixel_size)})
        score_file = picks_dir / f"{mic.name}_scores.mrc"
        if score_file.is_file():
            import json

            grid = json.loads(score_file.with_suffix(".json").read_text())
            try:
                data = read_micrograph(score_file).data
            except DeepPickerError as err:
                logger.info("score map not shown: %s", err)
            else:
                smap = ScoreMap(data, tuple(grid["origin"]), tuple(grid["spacing"]))
                layer = _layers.update_or_add(viewer, _layers.score_map_layer_data(
                    smap, name=f"{mic.name} scores", image_layer=image))
                layer.visible = k == 0
        for table, suffix, source in ((refs, "reference", "manual"), (picked, "picks", "model")):
            if mic.name in table:
                layer = _layers.update_or_add(viewer, _layers.points_layer_data(
                    table[mic.name], name=f"{mic.name} {suffix}", box=BOX, image_layer=image,
                    source=source))
                layer.visible = k == 0
    add_plugin_docks(viewer)
    note("close the napari window to finish")
    napari.run()


def add_plugin_docks(viewer) -> None:
    """Dock every widget the plugin's manifest contributes (none if it is not registered)."""
    try:
        from npe2 import PluginManager

        manifest = PluginManager.instance().get_manifest(PLUGIN)
        names = [w.display_name for w in manifest.contributions.widgets or []]
    except (KeyError, ImportError) as err:
        logger.info("no plugin docks: %s", err)
        return
    for name in names:
        try:
            viewer.window.add_plugin_dock_widget(PLUGIN, name)
        except Exception as err:  # noqa: BLE001 - one broken dock must not stop the demo
            note(f"could not open the {name!r} dock: {err}")


def cmd_demo(args) -> int:
    """Run the end-to-end demonstration (``deeppicker demo``)."""
    from napari_deeppicker.core.evaluation import evaluate, plot_report
    from napari_deeppicker.core.model import load_model
    from napari_deeppicker.core.picking import PickConfig
    from napari_deeppicker.core.synthetic import SHAPES

    outdir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="deeppicker-demo-"))
    outdir.mkdir(parents=True, exist_ok=True)
    note(f"writing the demo files to {outdir}")
    device = resolve_device(args.device)
    try:
        model = load_model("general", device=device)
        seen = trained_names(model)
        shape = next((s for s in DEMO_SHAPES if s not in seen), DEMO_SHAPES[0])
        novelty = ("a shape the model has not seen" if shape not in seen and any(s in seen for s in SHAPES)
                   else "new micrographs; the general model was trained on random variants of every "
                        "shape family, not on this one's standard variant")
        note(f"picking with the general model ({model.metadata['path']})")
    except ModelFileError as err:
        shape = DEMO_SHAPES[0]
        others = [s for s in SHAPES if s != shape]
        note(f"{err}: training a quick model for about {args.train_seconds:g} s on simulated "
             f"micrographs of other shapes ({', '.join(others)}) instead")
        model = quick_model(outdir, others, args.size, args.train_seconds, args.seed, device)
        novelty = "a shape the model has not seen"
    note(f"simulating {args.n} micrographs of '{shape}' particles, {novelty}")
    note("picking with the automatic threshold (--threshold auto: one per micrograph, from its own "
         "scores; the fixed 0.5 keeps too much on molecules a model was not trained on)")
    data = outdir / "data"
    paths = simulate(data, args.n, args.size, seed=args.seed, shapes=[shape], box=BOX)
    picks_dir = outdir / "picks"
    picks_dir.mkdir(exist_ok=True)
    records = list(pick_files(model, paths, BOX, PickConfig(threshold="auto"), picks_dir, scores=True,
                              device=device))
    failed = [r for r in records if "error" in r]
    if failed:
        raise DeepPickerError(f"picking failed: {failed[0]['error']}")
    picked, refs = load_pairs(str(picks_dir), str(data / "coords"), BOX)
    report = evaluate(picked, refs, BOX)
    plot_report(report, outdir / "evaluation.png", title=f"demo: '{shape}' particles")
    sys.stdout.write(report.table() + "\n")
    note(f"picks in {picks_dir}, ground truth in {data / 'coords'}, "
         f"plot {outdir / 'evaluation.png'}")
    if args.no_viewer or not display_available():
        if not args.no_viewer:
            note("no display ($DISPLAY is not set): not opening napari")
        return 0
    show_in_napari(paths, picked, refs, picks_dir)
    return 0
