"""Train the general model shipped with napari-deeppicker (``--model general``).

The recipe (chosen by the leave-one-molecule-out experiments of ``benchmarks/general_lomo.py``)
is a mixture of training sets with the paper's equal shares: every set contributes the same
number of particles and as many background windows.

- The two real molecules of ``../shared/data/real`` (beta-galactosidase, box 32, denoised look;
  P. falciparum ribosome, box 64), one set each.
- Simulated micrographs (``core.synthetic``), several sets: every micrograph draws a shape family
  and a random variant of it (``shape_seed``), a box size, a diameter/box ratio, a defocus, a dose
  and a particle density; some carry a carbon film or crystalline ice, whose windows become
  negatives. Sets differ by box range (small 32-80 px, large 96-200 px) and by look: raw-looking
  shot-noise images and denoised-looking 8-bit images (``denoised=True``). This is recipe
  ``full``, the default and the shipped model: it generalised best to a held-out real molecule
  (best F1 0.783 on beta-galactosidase vs 0.739 for ``full_noise``, 0.695 for ``real_only``).
  Recipes ``full_noise`` / ``full_noise_mined`` add particle-free micrographs (and negatives
  mined on them) to make the network itself reject pure noise; they did not reach that (8 of 12
  noise micrographs still had a window above 0.5) and cost accuracy, so pure noise is rejected
  at picking time instead, by comparing each micrograph with its own phase-randomised null
  (``core/nullcheck.py``; ``benchmarks/null_check.py``).

Particles are dark in every set as the network sees them; bright-particle data are handled at
picking time (``--polarity``), which was better than mixing polarities in training (FINDINGS).

Usage::

    python scripts/train_general.py [--recipe full] [--seed 0] [--cache DIR]
                                    [--out src/napari_deeppicker/models/general.safetensors]

Everything is seeded: the same command on the same software gives the same model on a CPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from napari_deeppicker.core.io import read_coordinates_by_micrograph, read_micrograph
from napari_deeppicker.core.preprocess import TARGET_BOX, bandpass_resample
from napari_deeppicker.core.synthetic import SHAPES, simulate_micrograph
from napari_deeppicker.core.training import TrainConfig, Trainer, TrainingSet

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
MODEL_OUT = ROOT / "src" / "napari_deeppicker" / "models" / "general.safetensors"
MOLECULES = {"betagal": ("EMPIAR-10017-betagal", 32), "ribosome": ("EMPIAR-10028-ribosome", 64)}
BOX_RANGES = {"small": (32, 80), "large": (96, 200)}
log = logging.getLogger("train_general")


@dataclass
class Recipe:
    """A training mixture and its optimisation settings.

    ``synthetic`` lists the simulated sets as ``(box range, look)`` with look ``raw`` or
    ``denoised``; ``real`` the real molecules used; ``per_set`` the particles simulated per
    synthetic set (the equal share is the smallest set, capped by ``max_per_set``);
    ``noise_fraction`` adds particle-free micrographs as negatives (see :func:`synthetic_set`);
    ``mining_epochs`` > 0 adds ``mining_rounds`` fine-tuning stages with negatives mined on them.
    """

    name: str
    real: tuple[str, ...] = ("betagal", "ribosome")
    synthetic: tuple[tuple[str, str], ...] = ()
    shapes: tuple[str, ...] = SHAPES
    per_set: int = 900
    max_per_set: int | None = 900
    noise_fraction: float = 0.0
    mining_epochs: int = 0
    mining_rounds: int = 1
    epochs: int = 20
    patience: int = 4
    lr: float = 0.01


_SYN_ALL = (("small", "raw"), ("large", "raw"), ("small", "denoised"), ("large", "denoised"))
RECIPES = {
    "full": Recipe("full", synthetic=_SYN_ALL),
    "no_denoised": Recipe("no_denoised", synthetic=(("small", "raw"), ("large", "raw"))),
    "real_only": Recipe("real_only"),
    "synthetic_only": Recipe("synthetic_only", real=(), synthetic=_SYN_ALL),
    "full_x2": Recipe("full_x2", synthetic=_SYN_ALL + _SYN_ALL),
    "full_noise": Recipe("full_noise", synthetic=_SYN_ALL, noise_fraction=0.35),
    "full_noise_mined": Recipe("full_noise_mined", synthetic=_SYN_ALL, noise_fraction=0.35,
                               mining_epochs=6, mining_rounds=2),
}


def load_real(key: str) -> tuple[dict, dict, int]:
    """Micrographs (by stem) and expert coordinates of one real molecule, and its box."""
    folder, box = MOLECULES[key]
    refs = read_coordinates_by_micrograph(REAL / folder / "coords")
    mics = sorted((REAL / folder / "micrographs").glob("*.mrc"))
    images = {m.stem: np.asarray(read_micrograph(m).data, dtype=np.float32)
              for m in mics if m.stem in refs}
    return images, refs, box


def real_set(key: str) -> TrainingSet:
    """One training set with every micrograph of a real molecule."""
    images, refs, box = load_real(key)
    names = sorted(images)
    return TrainingSet([images[n] for n in names], [refs[n] for n in names], box, name=key)


def micrograph_parameters(rng: np.random.Generator, box_range, look: str, shapes, k: int) -> dict:
    """Random simulation parameters of one training micrograph (``shapes[k]``, in turn)."""
    box = int(rng.integers(box_range[0], box_range[1] + 1))
    default_n = 45 * (64 / box) ** 2
    return {
        "size": 1024, "shape": shapes[k % len(shapes)], "shape_seed": int(rng.integers(0, 10_000)),
        "box": box, "diameter": float(box * rng.uniform(0.6, 0.9)),
        "defocus_um": float(rng.uniform(0.8, 3.5)), "dose": float(rng.uniform(12.0, 60.0)),
        "n_particles": max(3, int(round(default_n * rng.uniform(0.5, 2.0)))),
        "carbon": bool(rng.random() < 0.25), "ice": bool(rng.random() < 0.3),
        "denoised": look == "denoised", "seed": int(rng.integers(0, 2**31 - 1)),
    }


def synthetic_set(box_key: str, look: str, shapes, n_particles: int, seed: int,
                  noise_fraction: float = 0.0) -> tuple[TrainingSet, list]:
    """Simulate micrographs until they hold ``n_particles`` particles; one set per box range/look.

    With ``noise_fraction`` > 0, particle-free micrographs (same ice, CTF, dose, contamination;
    ``noise_only=True``) are added, one per ``1 / noise_fraction`` particle micrographs, with
    windows at random positions as negatives (1.5 per particle of an average micrograph): the
    network learns that noise alone is not a particle ("Einstein from noise").

    Returns the set and the parameters of every micrograph (recorded in the model metadata).
    """
    rng = np.random.default_rng(seed)
    images, coords, params, total = [], [], [], 0
    # Boxes differ between micrographs but a set has one box: each micrograph is resampled here
    # as preprocessing would (box -> 64 px, Fourier cropping or padding), so the network sees
    # exactly what picking that micrograph at its own box would give it.
    ref_box = TARGET_BOX
    while total < n_particles:
        p = micrograph_parameters(rng, BOX_RANGES[box_key], look, shapes, len(images))
        image, xy = simulate_micrograph(**p)
        image, xy = _rescale(image, xy, ref_box / p["box"])
        images.append(image)
        coords.append(xy)
        params.append(p)
        total += len(xy)
    hard = [xy.iloc[:0] for xy in coords]
    per_image = max(1, int(round(1.5 * total / len(images))))
    for k in range(int(np.ceil(noise_fraction * len(params)))):
        p = dict(micrograph_parameters(rng, BOX_RANGES[box_key], look, shapes, k), noise_only=True)
        image, xy = simulate_micrograph(**p)
        image, xy = _rescale(image, xy, ref_box / p["box"])
        margin = ref_box / 2
        rc = rng.uniform(margin, np.array(image.shape) - 1 - margin, size=(per_image, 2))
        images.append(image)
        coords.append(xy)
        hard.append(pd.DataFrame({"x": rc[:, 1], "y": rc[:, 0]}))
        params.append(p)
    name = f"synthetic-{box_key}-{look}"
    return TrainingSet(images, coords, ref_box, hard_negatives=hard if noise_fraction else None,
                       name=name), params


def _rescale(image: np.ndarray, xy, factor: float):
    """Resample an image by ``factor`` (Fourier) and scale its coordinates to match."""
    if abs(factor - 1.0) < 1e-6:
        return image, xy
    shape = tuple(max(1, int(round(n * factor))) for n in image.shape)
    out = bandpass_resample(image, shape, 0.0, 0.0) + float(image.mean())
    xy = xy.copy()
    xy["x"] = xy["x"] * shape[1] / image.shape[1]
    xy["y"] = xy["y"] * shape[0] / image.shape[0]
    return out.astype(np.float32), xy


def _cached_synthetic_set(box_key, look, shapes, n_particles, seed, noise, cache: Path | None):
    """:func:`synthetic_set`, kept as a pickle in ``cache`` (deterministic in its arguments)."""
    if cache is None:
        return synthetic_set(box_key, look, shapes, n_particles, seed, noise)
    import pickle

    stem = f"{box_key}-{look}-{'_'.join(shapes)}-{n_particles}-{seed}"
    path = Path(cache) / f"{stem}{f'-noise{noise}' if noise else ''}.pkl"
    if path.is_file():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    result = synthetic_set(box_key, look, shapes, n_particles, seed, noise)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(result, fh)
    return result


def build_sets(recipe: Recipe, seed: int = 0, exclude_real=(), exclude_shapes=(),
               cache: Path | None = None) -> tuple[list, dict]:
    """The training sets of a recipe, optionally without some real molecules or shapes.

    Returns
    -------
    sets : list of TrainingSet
    data : dict
        A JSON-able description of the data (for the model metadata).
    """
    sets, data = [], {"real": [], "synthetic": []}
    for key in recipe.real:
        if key in exclude_real:
            continue
        tset = real_set(key)
        sets.append(tset)
        data["real"].append({"name": key, "folder": MOLECULES[key][0], "box": tset.box,
                             "micrographs": len(tset.micrographs),
                             "particles": int(sum(len(c) for c in tset.coordinates))})
    shapes = tuple(s for s in recipe.shapes if s not in exclude_shapes)
    for k, (box_key, look) in enumerate(recipe.synthetic):
        set_seed = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        tset, params = _cached_synthetic_set(box_key, look, shapes, recipe.per_set, set_seed,
                                              recipe.noise_fraction, cache)
        tset.name = f"{tset.name}-{k}"
        sets.append(tset)
        data["synthetic"].append({"name": tset.name, "seed": set_seed,
                                  "box_range": list(BOX_RANGES[box_key]),
                                  "look": look, "shapes": list(shapes), "micrographs": len(params),
                                  "particles": int(sum(len(c) for c in tset.coordinates)),
                                  "noise_micrographs": sum(bool(p.get("noise_only"))
                                                           for p in params)})
    return sets, data


def mine_noise_negatives(model, sets) -> int:
    """Add the model's best candidates on every particle-free micrograph to its negatives.

    Random windows of noise are easy negatives; the few noise blobs the model scores highest are
    what makes it pick pure noise. As many are added as the micrograph already has negatives.
    Returns the number added.
    """
    from napari_deeppicker.core.picking import PickConfig, pick_micrograph

    added = 0
    for tset in sets:
        if not tset.hard_negatives:
            continue
        for k, (image, coords) in enumerate(zip(tset.micrographs, tset.coordinates)):
            known = tset.hard_negatives[k]
            if len(coords) or not len(known):
                continue
            picks, _ = pick_micrograph(model, image, tset.box, PickConfig(threshold=0.05))
            picks = picks.head(len(known))[["x", "y"]]
            tset.hard_negatives[k] = pd.concat([known, picks], ignore_index=True)
            added += len(picks)
    return added


def _log_epochs(trainer) -> None:
    for step in trainer.run():
        if step.message == "epoch done":
            log.info("epoch %d: train loss %.4f, val loss %.4f, val accuracy %.3f", step.epoch,
                     step.train_loss, step.val_loss, step.val_accuracy)


def train_recipe(recipe: Recipe, seed: int = 0, exclude_real=(), exclude_shapes=(), device=None,
                 cache: Path | None = None, stage1=None):
    """Build the mixture and train; returns the best model (its metadata describes everything).

    With ``recipe.mining_epochs``, ``recipe.mining_rounds`` more stages each mine hard negatives
    on the particle-free micrographs (:func:`mine_noise_negatives`) and fine-tune on the mixture
    with them.
    ``stage1`` (a model) replaces the first stage, e.g. to resume after it.
    """
    import torch

    from napari_deeppicker.core.model import select_device

    start = time.perf_counter()
    sets, data = build_sets(recipe, seed, exclude_real, exclude_shapes, cache)
    simulated = time.perf_counter() - start
    config = TrainConfig(epochs=recipe.epochs, patience=recipe.patience, lr=recipe.lr, seed=seed,
                         max_per_set=recipe.max_per_set, device=device)
    if stage1 is None:
        trainer = Trainer(sets, config)
        _log_epochs(trainer)
        model = trainer.best_model
    else:
        model = stage1
    info = {"stage1_training": model.metadata.get("training", {}), "mined_negatives": []}
    for round_ in range(recipe.mining_rounds if recipe.mining_epochs else 0):
        info["mined_negatives"].append(mine_noise_negatives(model, sets))
        log.info("round %d: mined %d negatives on particle-free micrographs", round_ + 1,
                 info["mined_negatives"][-1])
        config = replace(config, epochs=recipe.mining_epochs, lr=recipe.lr / 2,
                         seed=seed + 1 + round_)
        trainer = Trainer(sets, config, init=model)
        _log_epochs(trainer)
        model = trainer.best_model
    model.metadata["general"] = {
        "recipe": asdict(recipe), "seed": seed, "data": data,
        "excluded": {"real": list(exclude_real), "shapes": list(exclude_shapes)}, **info,
        "seconds_data": round(simulated, 1), "seconds_total": round(time.perf_counter() - start, 1),
        "device": str(select_device(device)),
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python scripts/train_general.py " + " ".join(sys.argv[1:]),
        "polarity": "particles dark (use --polarity bright or auto for bright particles)",
    }
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=MODEL_OUT)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path,
                        help="keep the simulated sets here (reused if present)")
    parser.add_argument("--stage1", type=Path,
                        help="a model made by the first stage of this recipe and seed: resume after it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    from napari_deeppicker.core.model import save_model

    from napari_deeppicker.core.model import load_model

    stage1 = load_model(args.stage1) if args.stage1 else None
    model = train_recipe(RECIPES[args.recipe], args.seed, device=args.device, cache=args.cache,
                         stage1=stage1)
    save_model(model, args.out)
    log.info("wrote %s (%.0f s)", args.out, model.metadata["general"]["seconds_total"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
