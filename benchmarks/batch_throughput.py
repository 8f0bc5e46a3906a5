"""Throughput and memory of batch picking: micrographs per second, in process and on Dask.

Simulates ``--n`` micrographs of ``--size`` x ``--size`` pixels with ``deeppicker simulate``
(box ``--box``), takes the general model when it is installed (else trains a small model for
five epochs on 20 of them: speed does not depend on the weights), then:

1. ``deeppicker pick`` in process on all of them, under ``/usr/bin/time -v`` (wall time and peak
   RSS of the whole command, Python start-up and model loading included) - and on a tenth of
   them, to show that peak memory does not grow with the number of micrographs;
2. the same batch on a Dask ``LocalCluster`` of ``--workers`` single-threaded worker processes
   (``DaskBatchPicker``, in this process; cluster start-up timed separately), with the peak RSS
   of the client and of every worker, and a check that its outputs match the in-process ones.

Micrographs per second are given over the command's own time (``pick_summary.json``'s
``seconds``: reading, picking and writing, with model loading but without Python start-up) and
over the whole command's wall time.

Usage::

    python benchmarks/batch_throughput.py [--n 200] [--size 1024] [--box 64] [--workers 2]
        [--workdir DIR] [--out benchmarks/results/batch_throughput.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench import (  # noqa: E402
    RESULTS,
    deeppicker_cmd,
    loadavg,
    provenance,
    run_timed,
    setup_logging,
    write_json,
)

log = logging.getLogger("benchmark")


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def simulate(workdir: Path, n: int, size: int, box: int) -> Path:
    sim = workdir / "sim"
    if len(list((sim / "micrographs").glob("*.mrc"))) != n:
        shutil.rmtree(sim, ignore_errors=True)
        cmd = [*deeppicker_cmd(), "simulate", sim, "--n", n, "--size", size, "--box", box,
               "--seed", "0"]
        log.info("simulating %d micrographs of %d px", n, size)
        subprocess.run([str(c) for c in cmd], check=True)
    return sim


def get_model(workdir: Path, sim: Path, box: int) -> tuple[str, str]:
    from napari_deeppicker.core.errors import ModelFileError
    from napari_deeppicker.core.model import load_model

    try:
        load_model("general")
        return "general", "the shipped general model"
    except ModelFileError:
        pass
    path = workdir / "quick.safetensors"
    if not path.is_file():
        train = workdir / "train"
        (train / "micrographs").mkdir(parents=True, exist_ok=True)
        (train / "coords").mkdir(parents=True, exist_ok=True)
        for mic in sorted((sim / "micrographs").glob("*.mrc"))[:20]:
            shutil.copy(mic, train / "micrographs")
            shutil.copy(sim / "coords" / f"{mic.stem}.star", train / "coords")
        cmd = [*deeppicker_cmd(), "train", "--micrographs", train / "micrographs", "--coords",
               train / "coords", "--box", box, "--out", path, "--epochs", "5", "--device", "cpu"]
        log.info("training a quick model (the general model is not installed)")
        subprocess.run([str(c) for c in cmd], check=True)
    return str(path), "a model trained for 5 epochs on 20 of the simulated micrographs"


def in_process(mics: list[Path], model: str, box: int, out: Path) -> dict:
    """``deeppicker pick`` on ``mics`` (given as a list file) under /usr/bin/time -v."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    listing = out.parent / f"{out.name}_list.txt"
    listing.write_text("".join(f"{m}\n" for m in mics))
    cmd = [*deeppicker_cmd(), "pick", listing, "--model", model, "--box", box, "--out", out,
           "--device", "cpu"]
    timed = run_timed(cmd)
    summary = json.loads((out / "pick_summary.json").read_text())
    seconds = summary["seconds"]
    return {**timed, "n_micrographs": len(mics), "n_picks": summary["n_picks"],
            "picking_s": seconds, "mic_per_s": round(len(mics) / seconds, 3),
            "mic_per_s_whole_command": round(len(mics) / timed["wall_s"], 3)}


def on_dask(sim: Path, model_arg: str, box: int, out: Path, workers: int) -> dict:
    """DaskBatchPicker on a LocalCluster; peak RSS of the client and of each worker."""
    import distributed

    from napari_deeppicker.core.batch import resolve_inputs
    from napari_deeppicker.core.distributed import DaskBatchPicker
    from napari_deeppicker.core.model import load_model

    shutil.rmtree(out, ignore_errors=True)
    load = loadavg()
    start = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    client.run(lambda: __import__("torch").__version__)  # workers ready, torch loaded
    startup = time.perf_counter() - start
    try:
        items = resolve_inputs(sim / "micrographs")
        picker = DaskBatchPicker(load_model(model_arg), items, box, out, client=client)
        t0 = time.perf_counter()
        statuses = [p.status for p in picker.run()]
        picking = time.perf_counter() - t0
        worker_rss = client.run(_peak_rss_mb)
    finally:
        client.close()
        cluster.close()
    return {"n_micrographs": len(items), "workers": workers, "threads_per_worker": 1,
            "n_picked": statuses.count("picked"), "n_picks": picker.n_picks,
            "cluster_startup_s": round(startup, 3), "picking_s": round(picking, 3),
            "mic_per_s": round(len(items) / picking, 3),
            "mic_per_s_with_startup": round(len(items) / (picking + startup), 3),
            "client_peak_rss_mb": _peak_rss_mb(),
            "worker_peak_rss_mb": sorted(worker_rss.values()), "load_average": load}


def compare(a: Path, b: Path) -> dict:
    """How far two runs' per-micrograph coordinates are apart."""
    from napari_deeppicker.core.batch import coordinate_rows

    same, counts, worst = 0, 0, 0.0
    files = sorted(a.glob("*.star"))
    for path in files:
        ra, rb = coordinate_rows(path), coordinate_rows(b / path.name)
        same += ra == rb
        if len(ra) == len(rb):
            counts += 1
            if ra:
                xa = np.array([r.split() for r in ra], float)
                xb = np.array([r.split() for r in rb], float)
                worst = max(worst, float(np.abs(xa - xb).max()))
    return {"files": len(files), "identical_files": same, "same_pick_counts": counts,
            "max_abs_difference": worst}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep the data here (default: temporary)")
    parser.add_argument("--out", type=Path, default=RESULTS / "batch_throughput.json")
    args = parser.parse_args()
    setup_logging()
    record = {"benchmark": "batch_throughput", **provenance(),
              "settings": {"n": args.n, "size": args.size, "box": args.box, "device": "cpu"}}
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="deeppicker_batch_"))
    sim = simulate(workdir, args.n, args.size, args.box)
    model, model_note = get_model(workdir, sim, args.box)
    record["model"] = model_note
    mics = sorted((sim / "micrographs").glob("*.mrc"))
    log.info("in process: %d micrographs", len(mics))
    record["in_process"] = in_process(mics, model, args.box, workdir / "picks_in_process")
    tenth = mics[: max(1, len(mics) // 10)]
    log.info("in process: %d micrographs (memory does not grow with N)", len(tenth))
    record["in_process_tenth"] = in_process(tenth, model, args.box, workdir / "picks_tenth")
    log.info("Dask LocalCluster: %d workers", args.workers)
    record["dask_local"] = on_dask(sim, model, args.box, workdir / "picks_dask", args.workers)
    record["dask_vs_in_process"] = compare(workdir / "picks_in_process", workdir / "picks_dask")
    record["load_average_end"] = loadavg()
    write_json(args.out, record)
    print(json.dumps({k: record[k] for k in ("in_process", "in_process_tenth", "dask_local",
                                             "dask_vs_in_process")}, indent=1))


if __name__ == "__main__":
    main()
