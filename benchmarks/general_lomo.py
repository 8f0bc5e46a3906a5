"""Leave-one-molecule-out experiments that choose the general model's recipe.

For each recipe of ``scripts/train_general.py`` and each real molecule, a model is trained on the
recipe without that molecule (and without the ``ring`` synthetic shape family), then picks:

- the held-out real molecule (all its micrographs, expert coordinates);
- held-out synthetic ``ring`` micrographs, raw-looking and denoised-looking.

Every candidate pick (threshold 0) is kept together with the candidates on the phase-randomised
null of each micrograph, so that the threshold rules (0.5, automatic, oracle best) are compared
on the same picks. With ``--self-train`` one round of the paper's self-training follows on the
held-out molecule, its positives chosen with the automatic threshold (runs stored before the
Otsu rule was adopted record ``selftrain_rule`` "auto_null_fdr0.1", capped at 0.99).

Usage::

    python benchmarks/general_lomo.py run --recipe full --target betagal [--self-train]
    python benchmarks/general_lomo.py report        # -> benchmarks/results/general_lomo.json

``run`` stores its candidates and model under ``--work`` (default /tmp/deeppicker_lomo).
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import train_general as tg  # noqa: E402

from napari_deeppicker.core.calibration import (  # noqa: E402
    null_image,
    otsu_threshold,
    threshold_from_null,
)
from napari_deeppicker.core.evaluation import evaluate  # noqa: E402
from napari_deeppicker.core.model import load_model, save_model  # noqa: E402
from napari_deeppicker.core.picking import PickConfig, pick_micrograph  # noqa: E402
from napari_deeppicker.core.synthetic import simulate_micrograph  # noqa: E402

HELD_OUT_SHAPE = "ring"
log = logging.getLogger("general_lomo")


def synthetic_test(look: str) -> tuple[dict, dict, int]:
    """Held-out-shape micrographs (three boxes), a raw or denoised look."""
    images, refs = {}, {}
    for k, (box, seed) in enumerate([(40, 1), (64, 2), (64, 3), (140, 4)]):
        image, xy = simulate_micrograph(1024, shape=HELD_OUT_SHAPE, shape_seed=500 + k, box=box,
                                        seed=90_000 + seed, denoised=look == "denoised", ice=k == 2)
        images[f"{HELD_OUT_SHAPE}_{look}_{k}_box{box}"] = (image, box)
        refs[f"{HELD_OUT_SHAPE}_{look}_{k}_box{box}"] = xy
    return images, refs


def candidates(model, images: dict, box_of) -> tuple[dict, dict, float]:
    """Every candidate (threshold 0) on each micrograph and on its phase-randomised null."""
    picks, nulls, start = {}, {}, time.perf_counter()
    config = PickConfig(threshold=0.0)
    for name, image in images.items():
        box = box_of(name)
        picks[name], _ = pick_micrograph(model, image, box, config)
        null, _ = pick_micrograph(model, null_image(image, seed=1), box, config)
        nulls[name] = null["score"].to_numpy()
    return picks, nulls, (time.perf_counter() - start) / max(1, len(images))


def cmd_run(args) -> None:
    recipe = tg.RECIPES[args.recipe]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tag = f"{args.recipe}_no-{args.target}_seed{args.seed}"
    model_path = work / f"{tag}.safetensors"
    if model_path.is_file():
        model = load_model(model_path)
        train_seconds = model.metadata["general"]["seconds_total"]
    else:
        model = tg.train_recipe(recipe, args.seed, exclude_real=(args.target,),
                                exclude_shapes=(HELD_OUT_SHAPE,), cache=work / "cache")
        save_model(model, model_path)
        train_seconds = model.metadata["general"]["seconds_total"]
    result = {"recipe": args.recipe, "target": args.target, "seed": args.seed,
              "train_seconds": train_seconds, "training": model.metadata.get("training", {}),
              "data": model.metadata["general"]["data"], "tests": {}}
    images, refs, box = tg.load_real(args.target)
    picks, nulls, per_mic = candidates(model, images, lambda name: box)
    result["tests"][args.target] = {"box": box, "picks": picks, "nulls": nulls, "refs": refs,
                                    "pick_seconds": per_mic}
    for look in ("raw", "denoised"):
        syn, syn_refs = synthetic_test(look)
        boxes = {k: v[1] for k, v in syn.items()}
        p, n, s = candidates(model, {k: v[0] for k, v in syn.items()}, boxes.get)
        result["tests"][f"{HELD_OUT_SHAPE}-{look}"] = {"box": boxes, "picks": p, "nulls": n,
                                                       "refs": syn_refs, "pick_seconds": s}
    if args.self_train:
        result["tests"][f"{args.target}+selftrain"] = self_train(model, images, refs, box, picks)
    out = work / f"{tag}{'_st' if args.self_train else ''}.pkl"
    with open(out, "wb") as fh:
        pickle.dump(result, fh)
    log.info("wrote %s", out)


def self_train(model, images, refs, box, picks) -> dict:
    """One round of self-training with positives above the automatic (Otsu) threshold."""
    from napari_deeppicker.core.selftrain import SelfTrainer
    from napari_deeppicker.core.training import TrainConfig

    thresholds = [otsu_threshold(picks[k]["score"].to_numpy()) for k in images]
    threshold = float(np.median(thresholds))
    start = time.perf_counter()
    trainer = SelfTrainer(model, list(images.values()), box, iterations=1,
                          pick_config=PickConfig(threshold=min(threshold, 0.99)),
                          train_config=TrainConfig(epochs=10, patience=3, seed=1))
    for _ in trainer.run():
        pass
    seconds = time.perf_counter() - start
    p, n, s = candidates(trainer.model, images, lambda name: box)
    return {"box": box, "picks": p, "nulls": n, "refs": refs, "pick_seconds": s,
            "selftrain_seconds": seconds, "selftrain_threshold": threshold,
            "selftrain_rule": "auto_otsu"}


def rules(test: dict) -> dict:
    """Per-micrograph thresholds of each rule: fixed levels and the automatic ones."""
    picks = test["picks"]
    out = {f"fixed_{t}": {k: t for k in picks} for t in (0.5, 0.9, 0.99)}
    out["auto_otsu"] = {k: otsu_threshold(p["score"].to_numpy()) for k, p in picks.items()}
    for fdr in (0.1, 0.2):
        out[f"auto_null_fdr{fdr}"] = {
            k: threshold_from_null(p["score"].to_numpy(), test["nulls"][k], max_fdr=fdr)
            for k, p in picks.items()}
    return out


def summarise_test(test: dict) -> dict:
    picks, refs = test["picks"], test["refs"]
    box = test["box"]
    boxes = box if isinstance(box, dict) else {k: box for k in picks}
    row = {}
    # Synthetic tests mix boxes: evaluate per box and pool the counts.
    groups = {}
    for k in picks:
        groups.setdefault(boxes[k], []).append(k)
    reports = {b: evaluate({k: picks[k] for k in ks}, {k: refs[k] for k in ks}, b)
               for b, ks in groups.items()}
    if len(reports) == 1:
        report = next(iter(reports.values()))
        row.update(best_f1=report.best_f1, best_threshold=report.best_threshold,
                   average_precision=report.average_precision)
    else:
        row.update(best_f1_by_box={int(b): r.best_f1 for b, r in reports.items()},
                   average_precision_by_box={int(b): r.average_precision
                                             for b, r in reports.items()})
    for name, thresholds in rules(test).items():
        tp = n_picks = n_ref = 0
        errors = []
        for b, ks in groups.items():
            rep = evaluate({k: picks[k][picks[k]["score"] > thresholds[k]] for k in ks},
                           {k: refs[k] for k in ks}, b)
            o = rep.overall
            tp, n_picks, n_ref = tp + o["tp"], n_picks + o["n_picks"], n_ref + o["n_reference"]
            if o["tp"]:
                errors.append((o["centre_error"], o["tp"]))
        nan = float("nan")
        row[name] = {"precision": tp / n_picks if n_picks else nan,
                     "recall": tp / n_ref if n_ref else nan,
                     "f1": 2 * tp / (n_picks + n_ref) if n_picks + n_ref else nan,
                     "centre_error": (sum(e * n for e, n in errors)
                                      / max(1, sum(n for _, n in errors))),
                     "threshold_median": float(np.median(list(thresholds.values())))}
    noise = np.concatenate(list(test["nulls"].values()))
    row["null_max_score"] = float(noise.max()) if noise.size else float("nan")
    if "selftrain_threshold" in test:
        row["selftrain_rule"] = "auto_null_fdr0.1 capped at 0.99"
    for key in ("pick_seconds", "selftrain_seconds", "selftrain_threshold", "selftrain_rule"):
        if key in test:
            row[key] = test[key]
    return row


def cmd_report(args) -> None:
    rows = []
    for path in sorted(Path(args.work).glob("*.pkl")):
        with open(path, "rb") as fh:
            result = pickle.load(fh)
        for name, test in result["tests"].items():
            row = {"recipe": result["recipe"], "held_out": result["target"], "seed": result["seed"],
                   "test": name, "train_seconds": result["train_seconds"],
                   "training_sets": [s["name"] for s in result["training"].get("sets", [])],
                   "epochs_run": result["training"].get("epochs_run"), **summarise_test(test)}
            rows.append(row)
            log.info("%-15s %-9s %-18s best-F1 %s  0.5: %s  auto: %s", row["recipe"],
                     row["held_out"], name, row.get("best_f1", row.get("best_f1_by_box")),
                     _fmt(row["fixed_0.5"]), _fmt(row["auto_otsu"]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1, default=float))


def _fmt(d):
    return (f"P {d['precision']:.2f} R {d['recall']:.2f} F1 {d['f1']:.2f} "
            f"(t~{d['threshold_median']:.2f})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run")
    run.add_argument("--recipe", choices=sorted(tg.RECIPES), default="full")
    run.add_argument("--target", choices=sorted(tg.MOLECULES), required=True)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--self-train", action="store_true")
    run.add_argument("--work", default="/tmp/deeppicker_lomo")
    report = sub.add_parser("report")
    report.add_argument("--work", default="/tmp/deeppicker_lomo")
    report.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "general_lomo.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("napari_deeppicker").setLevel(logging.WARNING)
    {"run": cmd_run, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
