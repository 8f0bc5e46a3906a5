"""Accuracy benchmarks of the core engine (issue 2 acceptance).

Experiments (each trains from scratch, CPU, fixed seeds):
- ``synthetic``: cross-shape on the project's synthetic data: train on four shapes, pick an unseen
  one; plus the "Einstein from noise" check on pure-noise micrographs with that model.
- ``semi``: semi-automated on the real data: train on 3 micrographs of a molecule, pick the rest.
- ``semi400``: semi-automated with exactly 400 expert particles of the target (the paper's claim
  that a few hundred suffice), picking the micrographs they did not come from.
- ``cross``: cross-molecule on the real data: train on one molecule, pick the other (+ one round
  of the paper's self-training).

Usage::

    python benchmarks/accuracy.py [synthetic|semi|semi400|cross ...] --out benchmarks/results

Writes ``<out>/accuracy_<experiment>.json`` and PR plots under ``docs/images/``; prints a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from napari_deeppicker.core.evaluation import evaluate, noise_score_summary, plot_report
from napari_deeppicker.core.io import read_coordinates_by_micrograph, read_micrograph
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.selftrain import SelfTrainer
from napari_deeppicker.core.synthetic import simulate_micrograph
from napari_deeppicker.core.training import TrainConfig, TrainingSet, train_model

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
MOLECULES = {"betagal": ("EMPIAR-10017-betagal", 32), "ribosome": ("EMPIAR-10028-ribosome", 64)}
log = logging.getLogger("benchmark")


def load_real(key):
    folder, box = MOLECULES[key]
    refs = read_coordinates_by_micrograph(REAL / folder / "coords")
    mics = sorted((REAL / folder / "micrographs").glob("*.mrc"))
    images = {m.stem: np.asarray(read_micrograph(m).data) for m in mics}
    return images, refs, box


def pick_all(model, images: dict, box, threshold=0.0):
    """Pick every micrograph keeping all candidates (threshold 0) so curves cover every score."""
    out, start = {}, time.perf_counter()
    for name, image in images.items():
        out[name], _ = pick_micrograph(model, image, box, PickConfig(threshold=threshold))
    return out, (time.perf_counter() - start) / max(len(images), 1)


def summarise(name, picks, refs, box, plot=None, extra=None):
    report = evaluate(picks, refs, box)
    at05 = evaluate({k: p[p["score"] > 0.5] for k, p in picks.items()}, refs, box).overall
    row = {"experiment": name, "n_micrographs": len(refs), "n_reference": int(sum(len(r) for r in refs.values())),
           "precision@0.5": at05["precision"], "recall@0.5": at05["recall"], "f1@0.5": at05["f1"],
           "centre_error@0.5": at05["centre_error"], "best_f1": report.best_f1,
           "best_threshold": report.best_threshold, "average_precision": report.average_precision,
           **(extra or {})}
    if plot:
        plot_report(report, plot, title=name)
    log.info("%s", json.dumps(row))
    return row


def train(sets, epochs=30):
    start = time.perf_counter()
    model = train_model(sets, TrainConfig(epochs=epochs, patience=5, seed=0))
    return model, time.perf_counter() - start


def exp_synthetic(out_images):
    train_shapes = ["globular", "elongated", "dumbbell", "ring"]
    test_shape = "multilobe"
    sets = []
    for k, shape in enumerate(train_shapes):
        sims = [simulate_micrograph(1024, shape=shape, box=64, seed=100 * k + s) for s in range(3)]
        sets.append(TrainingSet([i for i, _ in sims], [c for _, c in sims], 64, name=shape))
    model, seconds = train(sets)
    tests = {f"{test_shape}_{s}": simulate_micrograph(1024, shape=test_shape, box=64, seed=9000 + s) for s in range(4)}
    images = {k: v[0] for k, v in tests.items()}
    refs = {k: v[1] for k, v in tests.items()}
    picks, per_mic = pick_all(model, images, 64)
    row = summarise(f"synthetic cross-shape ({'+'.join(train_shapes)} -> {test_shape})", picks, refs, 64,
                    out_images / "pr_synthetic_cross_shape.png", {"train_seconds": seconds, "pick_seconds": per_mic})
    noise_max, guarded, alone = [], [], []
    for s in range(4):
        noise, _ = simulate_micrograph(1024, box=64, noise_only=True, seed=7000 + s)
        noise_picks, score_map = pick_micrograph(model, noise, 64, PickConfig())
        raw_picks, _ = pick_micrograph(model, noise, 64, PickConfig(null_check=False))
        noise_max.append(noise_score_summary(score_map.data))
        guarded.append(len(noise_picks))
        alone.append(len(raw_picks))
    row["noise"] = {"max_score": max(n["max"] for n in noise_max),
                    "fraction_above_0.5": float(np.mean([n["fraction_above"] for n in noise_max])),
                    "picks_above_0.5": guarded, "picks_above_0.5_without_null_check": alone}
    return [row]


def exp_semi(out_images):
    rows = []
    for key in MOLECULES:
        images, refs, box = load_real(key)
        names = sorted(refs)
        train_names, test_names = names[:3], names[3:]
        tset = TrainingSet([images[n] for n in train_names], [refs[n] for n in train_names], box, name=key)
        model, seconds = train([tset])
        picks, per_mic = pick_all(model, {n: images[n] for n in test_names}, box)
        rows.append(summarise(f"semi-automated {key} (3 micrographs, "
                              f"{sum(len(refs[n]) for n in train_names)} particles)", picks,
                              {n: refs[n] for n in test_names}, box, out_images / f"pr_semi_{key}.png",
                              {"train_seconds": seconds, "pick_seconds": per_mic}))
    return rows


def exp_semi400(out_images, n_particles=400):
    """The paper's semi-automated claim: a few hundred hand-picked particles of the target.

    Micrographs are taken in name order until they hold ``n_particles`` expert picks; training
    uses exactly that many (``max_per_set``), and the remaining micrographs are picked.
    """
    rows = []
    for key in MOLECULES:
        images, refs, box = load_real(key)
        names = sorted(refs)
        train_names, total = [], 0
        for n in names:
            if total >= n_particles:
                break
            train_names.append(n)
            total += len(refs[n])
        test_names = [n for n in names if n not in train_names]
        tset = TrainingSet([images[n] for n in train_names], [refs[n] for n in train_names], box,
                           name=key)
        start = time.perf_counter()
        model = train_model([tset], TrainConfig(epochs=30, patience=5, seed=0,
                                                max_per_set=n_particles))
        seconds = time.perf_counter() - start
        picks, per_mic = pick_all(model, {n: images[n] for n in test_names}, box)
        rows.append(summarise(f"semi-automated {key}, {n_particles} particles from "
                              f"{len(train_names)} micrographs", picks,
                              {n: refs[n] for n in test_names}, box,
                              out_images / f"pr_semi400_{key}.png",
                              {"train_seconds": seconds, "pick_seconds": per_mic,
                               "train_micrographs": train_names}))
    return rows


def exp_cross(out_images, targets=tuple(MOLECULES), self_train=True):
    rows = []
    data = {key: load_real(key) for key in MOLECULES}
    for target in targets:
        source = next(k for k in MOLECULES if k != target)
        images, refs, box = data[source]
        names = sorted(refs)
        tset = TrainingSet([images[n] for n in names], [refs[n] for n in names], box, name=source)
        model, seconds = train([tset])
        t_images, t_refs, t_box = data[target]
        picks, per_mic = pick_all(model, t_images, t_box)
        rows.append(summarise(f"cross-molecule {source} -> {target}", picks, t_refs, t_box,
                              out_images / f"pr_cross_{source}_to_{target}.png",
                              {"train_seconds": seconds, "pick_seconds": per_mic}))
        if not self_train:
            continue
        st = SelfTrainer(model, list(t_images.values()), t_box, iterations=1,
                         pick_config=PickConfig(threshold=0.5), train_config=TrainConfig(epochs=10, patience=3))
        for _ in st.run():
            pass
        picks2, _ = pick_all(st.model, t_images, t_box)
        rows.append(summarise(f"cross-molecule {source} -> {target} + self-training x1", picks2, t_refs, t_box))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", default=["synthetic", "semi", "cross"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--targets", nargs="+", choices=list(MOLECULES), default=list(MOLECULES),
                        help="target molecules of the cross-molecule experiment")
    parser.add_argument("--no-self-train", action="store_true",
                        help="skip the self-training round of the cross-molecule experiment")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    images = ROOT / "docs" / "images"
    images.mkdir(parents=True, exist_ok=True)
    for name in args.experiments:
        if name == "cross":
            rows = exp_cross(images, args.targets, not args.no_self_train)
            name = f"cross_{'_'.join(args.targets)}"
        else:
            rows = {"synthetic": exp_synthetic, "semi": exp_semi,
                    "semi400": exp_semi400}[name](images)
        (args.out / f"accuracy_{name}.json").write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
