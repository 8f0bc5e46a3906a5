"""Wall time and peak memory of ``deeppicker pick`` on one large micrograph.

The paper's case: a 3838 x 3710 micrograph with box 180 (TRPV1), 90 s per micrograph on a GPU.
Runs the real command line under ``/usr/bin/time -v`` (wall clock and maximum resident set size
of the whole process, Python and torch start-up included) and, separately, times the stages
in-process (preprocessing, dense scoring, the noise-null guard's extra scoring pass, peak filtering).

Usage::

    python benchmarks/speed.py [--size 3838 3710] [--box 180] [--repeat 3] [--model general]
        [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_deeppicker.core.io import write_micrograph
from napari_deeppicker.core.model import new_model, save_model
from napari_deeppicker.core.nullcheck import null_prepared
from napari_deeppicker.core.picking import PickConfig, finish_picks, score_prepared
from napari_deeppicker.core.preprocess import prepare_micrograph
from napari_deeppicker.core.synthetic import simulate_micrograph


def stage_times(image, box, model, repeat):
    best = {}
    for _ in range(repeat):
        t0 = time.perf_counter()
        prepared = prepare_micrograph(image, box, model.preprocess, keep_unclipped=True)
        t1 = time.perf_counter()
        score_map = score_prepared(model, prepared)
        t2 = time.perf_counter()
        null = null_prepared(prepared)
        null_map = score_prepared(model, null)
        t3 = time.perf_counter()
        finish_picks(score_map, prepared, box, PickConfig(), image.shape, (null_map, null))
        t4 = time.perf_counter()
        for key, value in (("preprocess_s", t1 - t0), ("score_s", t2 - t1),
                           ("null_check_s", t3 - t2), ("peaks_s", t4 - t3)):
            best[key] = min(best.get(key, np.inf), value)
    return best


def timed_cli(args: list[str]) -> dict:
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "napari_deeppicker", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time .*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    hours = int(wall.group(1) or 0)
    seconds = hours * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return {"wall_s": seconds, "peak_rss_mb": int(rss.group(1)) / 1024}


def large_case(workdir: Path, size=(3838, 3710), box: int = 180, repeat: int = 3,
               model: str | None = None) -> dict:
    """Time ``deeppicker pick`` on one simulated micrograph of ``size`` (cols, rows) with ``box``.

    ``model`` is a model file or ``"general"``; None uses random weights (same network, so the
    same cost). The micrograph is written to ``workdir/large.mrc``; returns the result dict.
    """
    cols, rows = size
    image, _ = simulate_micrograph((rows, cols), box=box, seed=0)
    mic = workdir / "large.mrc"
    write_micrograph(mic, image, 1.0)
    if model is None:
        loaded = new_model(0)
        model = str(save_model(loaded, workdir / "model.safetensors"))
    else:
        from napari_deeppicker.core.model import load_model

        loaded = load_model(model)
    stages = stage_times(image, box, loaded, repeat)
    # A fresh output folder per run: `pick --resume` (the default) would skip a finished micrograph.
    runs = [timed_cli(["pick", str(mic), "--model", str(model), "--box", str(box),
                       "--out", str(workdir / f"picks{k}"), "--device", "cpu"]) for k in range(repeat)]
    return {
        "micrograph": f"{cols} x {rows}", "box": box, "model": model, "threads": os.cpu_count(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"), "load_average": [round(v, 2) for v in os.getloadavg()],
        "stages_best_of": repeat, **stages, "cli_runs": runs,
        "cli_wall_s_min": min(r["wall_s"] for r in runs),
        "cli_wall_s_median": float(np.median([r["wall_s"] for r in runs])),
        "cli_peak_rss_mb_max": max(r["peak_rss_mb"] for r in runs),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[3838, 3710], metavar=("COLS", "ROWS"))
    parser.add_argument("--box", type=int, default=180)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", default=None,
                        help="model file or 'general' (default: random weights, same cost)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = large_case(Path(tmp), tuple(args.size), args.box, args.repeat, args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed_large.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
