"""Speed and memory of ``deeppicker pick`` vs Topaz (preprocess + extract), side by side.

Every command runs under ``/usr/bin/time -v``: wall time and maximum resident set size of the
whole process (Python and torch start-up included); Topaz's figure is the sum of its two
processes' wall times and the larger of their peaks. Both use the CPU with torch's default
threads. Three ways of counting:

- **one micrograph per process** (a cold start each time, what picking a single file costs);
- **a batch per process** (the handful of micrographs in one call: per-micrograph time =
  total / n, start-up amortised);
- DeepPicker's own per-micrograph time inside the batch (``pick_summary.json``).

Cases: ``--n`` real micrographs of each real set (Topaz downsampled 2x for beta-galactosidase,
4x for the ribosome, as in ``topaz_compare.py``); a simulated 3838 x 3710 micrograph with box 180
(the paper's TRPV1 size; ``speed.py``'s case, Topaz downsampled 8x so the particle is ~19 px).
Training: ``deeppicker train`` on the beta-galactosidase set limited to 10,000 particles (and as
many background windows) for a fixed number of epochs, early stopping off; seconds per epoch
come from the same run (a worker subprocess that times every epoch of ``core.training.Trainer``).

The machine may be shared: the load average is recorded next to every timing.

Usage::

    python benchmarks/speed_compare.py [--model general] [--n 3] [--epochs 5] [--topaz-python PY]

Writes ``benchmarks/results/speed_compare.json`` and ``docs/images/bench_speed.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _bench import (IMAGES, RESULTS, SETS, RealSet, deeppicker_cmd, loadavg, provenance,
                    run_timed, setup_logging, snapshot_model, topaz_commands, topaz_python,
                    write_json)

log = logging.getLogger("benchmark")
LARGE = RealSet("large", "simulated 3838 x 3710", 180, 8)


def topaz_run(python: str, rset: RealSet, mics, work: Path) -> dict:
    """Preprocess + extract on these micrographs in two processes; wall summed, peak = max."""
    pre, ext, _ = topaz_commands(python, mics, work, rset)
    a, b = run_timed(pre), run_timed(ext)
    return {"wall_s": round(a["wall_s"] + b["wall_s"], 3), "cpu_s": round(a["cpu_s"] + b["cpu_s"], 2),
            "peak_rss_mb": max(a["peak_rss_mb"], b["peak_rss_mb"]), "preprocess": a, "extract": b}


DP_VARIANTS = {"deeppicker": [], "deeppicker_auto": ["--threshold", "auto"]}
LABELS = {"deeppicker": "deeppicker pick", "deeppicker_auto": "deeppicker pick --threshold auto",
          "topaz": "Topaz preprocess + extract"}


def deeppicker_run(model: str, box: int, mics, out: Path, options=()) -> dict:
    """``deeppicker pick`` (its defaults plus ``options``) on these micrographs in one process."""
    cmd = [*deeppicker_cmd(), "pick", *[str(m) for m in mics], "--model", model, "--box", str(box),
           "--device", "cpu", "--out", str(out), *options]
    run = run_timed(cmd)
    summary = out / "pick_summary.json"
    if summary.is_file():
        records = json.loads(summary.read_text()).get("micrographs", [])
        run["in_process_s"] = [r.get("seconds") for r in records if "seconds" in r]
    return run


def compare(name: str, rset: RealSet, mics, model: str, python: str | None, work: Path,
            variants=tuple(DP_VARIANTS)) -> dict:
    """Both tools on ``mics``: one process per micrograph, then one process for all."""
    tools = [*variants, *(["topaz"] if python else [])]

    def run(tool, paths, where):
        if tool == "topaz":
            return topaz_run(python, rset, paths, where)
        return deeppicker_run(model, rset.box, paths, where, DP_VARIANTS[tool])

    per_mic = {tool: [] for tool in tools}
    for k, mic in enumerate(mics):
        for tool in tools:
            per_mic[tool].append(run(tool, [mic], work / f"{tool}_{k}"))
        log.info("%s %s: %s", name, mic.name, "; ".join(
            f"{t} {per_mic[t][-1]['wall_s']:.2f} s (CPU {per_mic[t][-1]['cpu_s']:.1f} s) "
            f"{per_mic[t][-1]['peak_rss_mb']:.0f} MB" for t in tools))
    # With one micrograph a batch is the same run again: reuse it rather than time it twice.
    batch = {tool: run(tool, mics, work / f"{tool}_batch") if len(mics) > 1 else per_mic[tool][0]
             for tool in tools}
    out = {"box": rset.box, "n_micrographs": len(mics), "micrographs": [m.name for m in mics],
           "image_shape": list(_shape(mics[0])), "topaz_scale": rset.topaz_scale,
           "topaz_radius": rset.topaz_radius, "tools": {t: LABELS[t] for t in tools},
           "per_micrograph_process": per_mic, "batch": batch}
    for tool in tools:
        out[f"{tool}_single_wall_s_median"] = float(np.median([r["wall_s"] for r in per_mic[tool]]))
        out[f"{tool}_single_cpu_s_median"] = float(np.median([r["cpu_s"] for r in per_mic[tool]]))
        out[f"{tool}_single_peak_mb_max"] = max(r["peak_rss_mb"] for r in per_mic[tool])
        out[f"{tool}_batch_wall_s_per_micrograph"] = batch[tool]["wall_s"] / len(mics)
        out[f"{tool}_batch_cpu_s_per_micrograph"] = batch[tool]["cpu_s"] / len(mics)
        out[f"{tool}_batch_peak_mb"] = batch[tool]["peak_rss_mb"]
        inside = batch[tool].get("in_process_s") or []
        if tool != "topaz":
            out[f"{tool}_in_process_s_median"] = float(np.median(inside)) if inside else None
    for tool in (t for t in tools if python and t != "topaz"):
        for what, key in (("wall", "single_wall_s_median"), ("cpu", "single_cpu_s_median"),
                          ("batch_wall", "batch_wall_s_per_micrograph"),
                          ("batch_cpu", "batch_cpu_s_per_micrograph")):
            out[f"topaz_over_{tool}_{what}"] = out[f"topaz_{key}"] / out[f"{tool}_{key}"]
    return out


def _shape(path: Path):
    from napari_deeppicker.core.io import read_micrograph

    return read_micrograph(path).data.shape


def train_worker(argv) -> int:
    """Subprocess entry: train for fixed epochs, print a JSON line of the timings on stdout."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--set", default="betagal")
    parser.add_argument("--particles", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    from napari_deeppicker.core.io import read_micrograph
    from napari_deeppicker.core.training import TrainConfig, Trainer, TrainingSet

    rset = SETS[args.set]
    refs = rset.references()
    mics = [m for m in rset.micrographs() if m.stem in refs]
    tset = TrainingSet([np.asarray(read_micrograph(m).data) for m in mics], [refs[m.stem] for m in mics],
                       rset.box, name=rset.key)
    config = TrainConfig(epochs=args.epochs, patience=args.epochs + 1, max_per_set=args.particles,
                         seed=0, device="cpu")
    trainer = Trainer([tset], config)
    start = last = time.perf_counter()
    extract_s, epochs = None, []
    for step in trainer.run():
        if step.stage == "train" and extract_s is None:
            extract_s = time.perf_counter() - start
            last = time.perf_counter()
        if step.message == "epoch done":
            now = time.perf_counter()
            epochs.append({"epoch": step.epoch, "seconds": round(now - last, 3), "val_loss": step.val_loss,
                           "val_accuracy": step.val_accuracy, "load_average": loadavg()})
            last = now
    n_batches = trainer.history[-1].n_batches if trainer.history else None
    print(json.dumps({"extract_s": extract_s, "epochs": epochs, "batches_per_epoch": n_batches,
                      "total_s": time.perf_counter() - start,
                      "n_particles": min(args.particles, int(sum(len(r) for r in refs.values())))}))
    return 0


def training(epochs: int, particles: int) -> dict:
    """Run :func:`train_worker` under /usr/bin/time -v and collect its timings."""
    import subprocess

    cmd = [sys.executable, __file__, "_train-worker", "--particles", str(particles), "--epochs", str(epochs)]
    load = loadavg()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=True)
    from _bench import parse_time_v

    data = json.loads(proc.stdout.strip().splitlines()[-1])
    per_epoch = [e["seconds"] for e in data["epochs"]]
    return {**data, **parse_time_v(proc.stderr), "load_average": load,
            "seconds_per_epoch_median": float(np.median(per_epoch)) if per_epoch else None,
            "equivalent_cli": f"deeppicker train --micrographs {SETS['betagal'].micrographs()[0].parent} "
                              f"--coords {SETS['betagal'].micrographs()[0].parent.parent / 'coords'} "
                              f"--box 32 --max-per-set {particles} --epochs {epochs} "
                              f"--patience {epochs + 1} --device cpu --out model.safetensors",
            "command": " ".join(cmd)}


def plot(result: dict, path: Path) -> None:
    """Bars: per-micrograph wall time and peak memory per case, and the training time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cases = [k for k in ("betagal", "ribosome", "large") if k in result["cases"]]
    labels = {"betagal": "betagal\n1024², box 32", "ribosome": "ribosome\n1024², box 64",
              "large": "3838 x 3710\nbox 180"}
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax_t, ax_m, ax_tr = fig.subplots(1, 3, width_ratios=[2, 2, 1.2])
    x = np.arange(len(cases))
    tools = [t for t in ("deeppicker", "deeppicker_auto", "topaz")
             if all(f"{t}_single_wall_s_median" in result["cases"][c] for c in cases)]
    width = 0.8 / max(len(tools), 1)
    for k, tool in enumerate(tools):
        colour = {"deeppicker": "C0", "deeppicker_auto": "C2", "topaz": "C1"}[tool]
        name = LABELS[tool]
        single = [result["cases"][c][f"{tool}_single_wall_s_median"] for c in cases]
        batch = [result["cases"][c][f"{tool}_batch_wall_s_per_micrograph"] for c in cases]
        mem = [result["cases"][c][f"{tool}_single_peak_mb_max"] / 1024 for c in cases]
        pos = x + (k - (len(tools) - 1) / 2) * width
        ax_t.bar(pos, single, width * 0.95, color=colour, alpha=0.35,
                 label=f"{name}: one micrograph per process")
        ax_t.bar(pos, batch, width * 0.6, color=colour,
                 label=f"{name}: per micrograph in a batch")
        bars = ax_m.bar(pos, mem, width * 0.95, color=colour, label=name)
        ax_m.bar_label(bars, fmt="%.2f", fontsize=7)
        for p, w, b in zip(pos, single, batch):
            ax_t.annotate(f"{w:.1f}", (p, max(w, b)), ha="center", va="bottom", fontsize=7)
            if w - b > 2.5:
                ax_t.annotate(f"{b:.1f}", (p, b), ha="center", va="top", fontsize=7, color="w")
    ax_m.axhline(1.0, color="k", ls="--", lw=0.8, label="goal: < 1 GB")
    for ax in (ax_t, ax_m):
        ax.set_xticks(x, [labels[c] for c in cases], fontsize=8)
    ax_t.set(ylabel="wall time per micrograph (s)",
             title="Picking wall time (start-up included;\na batch = the same micrographs in one process)")
    ax_t.title.set_fontsize(10)
    ax_m.set(ylabel="peak resident memory (GB)", title="Peak memory, one micrograph per process")
    ax_m.title.set_fontsize(10)
    for ax in (ax_t, ax_m):
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    tr = result.get("training")
    if tr:
        ax_tr.bar([0, 1], [tr["seconds_per_epoch_median"], tr["total_s"]], color=["C2", "C3"])
        ax_tr.set_xticks([0, 1], ["per epoch", f"total: extraction\n+ {len(tr['epochs'])} epochs"],
                         fontsize=8)
        for p, v in enumerate([tr["seconds_per_epoch_median"], tr["total_s"]]):
            ax_tr.annotate(f"{v:.0f} s", (p, v), ha="center", va="bottom", fontsize=8)
        ax_tr.set(ylabel="wall time (s)", title=f"Training: {tr['n_particles']:,} particles\n"
                  f"+ as many negatives (load {tr['load_average'][0]:g})")
        ax_tr.title.set_fontsize(10)
    else:
        ax_tr.set_axis_off()
    loads = [r["load_average_start"][0] for r in result.get("runs", [result["provenance"]])]
    fig.suptitle(f"deeppicker vs Topaz 0.3.20 on {result['provenance']['machine']['nproc']} CPU cores "
                 f"({result['provenance']['machine']['cpu_model']}), shared: 1-min load average "
                 f"{min(loads):g}-{max(loads):g} at the start of the runs", fontsize=10)
    fig.savefig(path, dpi=110)
    log.info("wrote %s", path)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_train-worker"]:
        return train_worker(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="general", help="model file or 'general'")
    parser.add_argument("--n", type=int, default=3, help="real micrographs per set")
    parser.add_argument("--cases", nargs="+", default=["betagal", "ribosome", "large", "training"],
                        choices=["betagal", "ribosome", "large", "training"])
    parser.add_argument("--variants", nargs="+", default=list(DP_VARIANTS), choices=list(DP_VARIANTS),
                        help="deeppicker settings timed: its defaults and/or --threshold auto")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (fixed, no early stop)")
    parser.add_argument("--particles", type=int, default=10_000, help="training particles")
    parser.add_argument("--no-topaz", action="store_true", help="skip Topaz (dry runs)")
    parser.add_argument("--topaz-python", default=None, help="python of the Topaz venv")
    parser.add_argument("--out", type=Path, default=RESULTS / "speed_compare.json")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--tag", default="", help="suffix for the plot name (dry runs)")
    parser.add_argument("--replot", action="store_true", help="only redraw the plot from --out")
    parser.add_argument("--merge", action="store_true",
                        help="update the cases run now in an existing --out (e.g. re-timing one "
                             "case when the machine is less loaded), keeping the others")
    args = parser.parse_args(argv)
    setup_logging()
    if args.replot:
        plot(json.loads(args.out.read_text()), args.images / f"bench_speed{args.tag}.png")
        return 0
    python = None if args.no_topaz else topaz_python(args.topaz_python)
    prov = provenance()
    result = {"provenance": prov, "model": args.model, "cases": {}, "runs": []}
    if args.merge and args.out.is_file():
        result = json.loads(args.out.read_text())
        if "runs" not in result:  # a file from a run before --merge existed: its provenance is the first run
            done = sorted(result["cases"]) + (["training"] if "training" in result else [])
            result["runs"] = [{**result["provenance"], "cases": done}]
        if result.get("model") != args.model:
            raise SystemExit(f"{args.out} was made with model {result.get('model')!r}, not {args.model!r}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, identity = snapshot_model(args.model, work / "models")
        result["runs"].append({**prov, "cases": args.cases, "model_identity": identity})
        for key in [c for c in args.cases if c in SETS]:
            mics = SETS[key].micrographs()[: args.n]
            result["cases"][key] = compare(key, SETS[key], mics, model, python, work / key, args.variants)
            result["cases"][key].update(date=prov["date"], load_average_end=loadavg())
            write_json(args.out, result)
        if "large" in args.cases:
            from speed import large_case

            (work / "large").mkdir()
            result["large_stages"] = large_case(work / "large", box=LARGE.box, repeat=1, model=model)
            mic = work / "large" / "large.mrc"
            result["cases"]["large"] = compare("large", LARGE, [mic], model, python, work / "large_cmp",
                                             args.variants)
            result["cases"]["large"].update(date=prov["date"], load_average_end=loadavg())
            write_json(args.out, result)
        if "training" in args.cases:
            log.info("training on %d particles for %d epochs", args.particles, args.epochs)
            result["training"] = {**training(args.epochs, args.particles), "date": prov["date"]}
    result["load_average_end"] = loadavg()
    write_json(args.out, result)
    plot(result, args.images / f"bench_speed{args.tag}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
