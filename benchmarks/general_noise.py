"""The "Einstein from noise" check of a model: picks on particle-free simulated micrographs.

For several looks (raw, denoised), boxes and contaminations, pure-noise micrographs
(``simulate_micrograph(noise_only=True)``: same ice, CTF, dose and contamination, no particle)
are picked with the default settings (the noise-null guard of ``core/nullcheck.py`` on), with
the guard off (the network alone) and with ``threshold="auto"``; the paper's criterion is that
no pick scores above 0.5.

Usage::

    python benchmarks/general_noise.py [--model general] [--seeds 2]
                                       [--out benchmarks/results/general_noise.json]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from napari_deeppicker.core.calibration import pick_auto
from napari_deeppicker.core.model import load_model
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.synthetic import simulate_micrograph

ROOT = Path(__file__).resolve().parents[1]
CASES = [  # (box, denoised, size, ice, carbon)
    (48, False, 384, False, False), (64, False, 1024, False, False), (64, True, 1024, False, False),
    (32, False, 1024, True, False), (128, False, 1024, False, True), (200, True, 1024, True, True),
]
log = logging.getLogger("general_noise")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="general")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out",
                        default=str(ROOT / "benchmarks" / "results" / "general_noise.json"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("napari_deeppicker").setLevel(logging.WARNING)
    model = load_model(args.model)
    rows = []
    for box, denoised, size, ice, carbon in CASES:
        for seed in range(args.seeds):
            image, _ = simulate_micrograph(size, box=box, noise_only=True, seed=4322 + seed,
                                           denoised=denoised, ice=ice, carbon=carbon)
            picks, score_map = pick_micrograph(model, image, box, PickConfig(threshold=0.0))
            alone, _ = pick_micrograph(model, image, box, PickConfig(threshold=0.0,
                                                                      null_check=False))
            auto, _, threshold = pick_auto(model, image, box)
            rows.append({"box": box, "denoised": denoised, "size": size, "ice": ice,
                         "carbon": carbon, "seed": seed,
                         "score_map_max": float(score_map.data.max()),
                         "max_pick_score": float(picks["score"].max()) if len(picks) else 0.0,
                         "picks_above_0.5": int((picks["score"] > 0.5).sum()),
                         "null_check": picks.attrs["null_check"],
                         "model_alone_max_pick_score":
                             float(alone["score"].max()) if len(alone) else 0.0,
                         "model_alone_picks_above_0.5": int((alone["score"] > 0.5).sum()),
                         "auto_threshold": threshold, "auto_picks": int(len(auto))})
            log.info("%s", rows[-1])
    summary = {"model": args.model, "model_path": model.metadata.get("path"),
               "micrographs": len(rows),
               "micrographs_with_a_pick_above_0.5": sum(r["picks_above_0.5"] > 0 for r in rows),
               "max_pick_score": max(r["max_pick_score"] for r in rows),
               "model_alone_micrographs_with_a_pick_above_0.5":
                   sum(r["model_alone_picks_above_0.5"] > 0 for r in rows),
               "model_alone_max_pick_score": max(r["model_alone_max_pick_score"] for r in rows),
               "mean_auto_picks": float(np.mean([r["auto_picks"] for r in rows])), "rows": rows}
    Path(args.out).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
