"""The general model across particle sizes: boxes from 32 to 300 px, raw and denoised looks.

One network serves every size because each box is rescaled to 64 px; this checks it on simulated
micrographs of a shape variant outside the training draws (``multilobe``, shape seed 20261121),
each micrograph about ten boxes wide, picked fully automatically (``--threshold auto``, the
noise-null guard on) and at 0.5.

Usage::

    python benchmarks/box_range.py [--model general] [--boxes 32 64 128 200 300] [--n 2]
        [--out benchmarks/results/box_range.json]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from napari_deeppicker.core.evaluation import evaluate
from napari_deeppicker.core.model import load_model
from napari_deeppicker.core.nullcheck import is_particle_free
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.synthetic import simulate_micrograph

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import RESULTS, provenance, write_json

log = logging.getLogger("box_range")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="general")
    parser.add_argument("--boxes", type=int, nargs="+", default=[32, 64, 128, 200, 300])
    parser.add_argument("--n", type=int, default=2, help="micrographs per box and look")
    parser.add_argument("--out", type=Path, default=RESULTS / "box_range.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("napari_deeppicker").setLevel(logging.WARNING)
    model = load_model(args.model)
    rows = []
    for box in args.boxes:
        size = max(1024, 10 * box)
        for look in ("raw", "denoised"):
            images, refs = {}, {}
            for k in range(args.n):
                image, truth = simulate_micrograph(size, shape="multilobe", shape_seed=20261121,
                                                   box=box, seed=6000 + k,
                                                   denoised=look == "denoised")
                images[f"{look}_{box}_{k}"], refs[f"{look}_{box}_{k}"] = image, truth
            every = {k: pick_micrograph(model, im, box, PickConfig(threshold=0.0))[0]
                     for k, im in images.items()}
            auto = {k: pick_micrograph(model, im, box, PickConfig(threshold="auto"))[0]
                    for k, im in images.items()}
            curve = evaluate(every, refs, box)
            at05 = evaluate({k: p[p["score"] > 0.5] for k, p in every.items()}, refs, box).overall
            at_auto = evaluate(auto, refs, box).overall
            rows.append({"box": box, "look": look, "size": size, "n_micrographs": args.n,
                         "n_reference": int(sum(len(r) for r in refs.values())),
                         "best_f1": curve.best_f1, "average_precision": curve.average_precision,
                         "at_0.5": at05, "auto": at_auto,
                         "particle_free": int(sum(is_particle_free(p)
                                                  for p in every.values()))})
            log.info("box %d %s: best F1 %.3f AP %.3f | 0.5 P %.3f R %.3f | auto P %.3f R %.3f "
                     "F1 %.3f", box, look, curve.best_f1, curve.average_precision,
                     at05["precision"], at05["recall"], at_auto["precision"], at_auto["recall"],
                     at_auto["f1"])
    write_json(args.out, {"provenance": provenance(), "model": args.model, "rows": rows})


if __name__ == "__main__":
    main()
