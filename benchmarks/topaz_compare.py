"""DeepPicker's general model vs Topaz's general model, side by side on the real sets.

Both tools pick every micrograph of each real set in ``../shared/data/real`` fully automatically
(no particle of the set is given to either), and both are scored by the same code,
``core.evaluation.evaluate`` (centres closer than 0.2 x box, one-to-one):

- **Topaz 0.3.20**, shipped general model ``resnet16_u64``, in its own venv:
  ``python -m topaz.commands.preprocess -s S`` then
  ``python -m topaz.commands.extract -m resnet16_u64 -d -1 -r R -x S -t -6``
  (S = 2 for beta-galactosidase, 4 for the ribosome: Topaz needs the particle at ~10-20 px;
  R = round(0.4 x box / S); ``-x S`` maps the coordinates back to the original pixels).
- **deeppicker pick --model general** as a user runs it (default threshold), and the same with
  ``--self-train 1`` (the paper's automatic iteration).

Reported per tool and set: precision, recall, F1 and centre error (mean distance / box) at the
tool's default threshold (Topaz: extract's default -6, i.e. all its picks, and also its score 0,
p = 0.5; DeepPicker: the CLI default), and over all score thresholds the best F1 (with its
threshold) and the average precision (area under the ranked precision-recall curve; DeepPicker's
curves come from a second run with ``--threshold 0``).

``--set-model betagal=FILE`` replaces the model for one set, e.g. with a leave-one-molecule-out
model that never saw that molecule (the shipped general model is trained on both real sets).

Usage::

    python benchmarks/topaz_compare.py [--sets betagal ribosome] [--model general]
        [--self-train 1] [--set-model KEY=FILE ...] [--pick-args "..."] [--topaz-python PY]

Writes ``--out`` (default ``benchmarks/results/topaz_compare.json``; the published runs use one
file per set, ``topaz_compare_<set>.json``) and ``docs/images/bench_topaz_<set>.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import pickle
import shlex
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from _bench import (IMAGES, RESULTS, SETS, TOPAZ_MODEL, deeppicker_cmd, display_name, loadavg, provenance,
                    read_topaz_picks, run_timed, setup_logging, snapshot_model, topaz_commands,
                    topaz_python, write_json)
from napari_deeppicker.core.evaluation import evaluate
from napari_deeppicker.core.io import read_coordinates_by_micrograph

log = logging.getLogger("benchmark")
TOPAZ_DEFAULT_T = -6.0


def summarise(picks: dict, refs: dict, box: int, thresholds: dict) -> dict:
    """The headline numbers of one tool on one set.

    ``picks`` holds every candidate with its score (the curve); ``thresholds`` names the score
    cut-offs at which to report precision / recall / F1 / centre error (optimal matching).
    """
    report = evaluate(picks, refs, box)
    out = {"n_candidates": report.overall["n_picks"], "recall_all_candidates": report.overall["recall"],
           "best_f1": report.best_f1, "best_threshold": report.best_threshold,
           "best_k": report.best_k, "average_precision": report.average_precision}
    for name, t in thresholds.items():
        kept = {k: p[p["score"] >= t] for k, p in picks.items()}
        out[name] = at_picks(kept, refs, box, threshold=t)
    return out, report


def at_picks(picks: dict, refs: dict, box: int, threshold=None) -> dict:
    """Precision, recall, F1, centre error of a set of picks as given (optimal matching)."""
    o = evaluate(picks, refs, box).overall
    return {"threshold": threshold, "n_picks": o["n_picks"], "tp": o["tp"],
            "precision": o["precision"], "recall": o["recall"], "f1": o["f1"],
            "centre_error": o["centre_error"]}


def load_picks(folder: Path, stems) -> dict:
    """DeepPicker picks by micrograph stem (every stem present, empty when nothing was picked)."""
    import pandas as pd

    found = read_coordinates_by_micrograph(folder)
    empty = pd.DataFrame({"x": [], "y": [], "score": []})
    return {s: found.get(s, empty) for s in stems}


def run_topaz(python: str, rset, mics, refs, workdir: Path, reuse: bool = False) -> dict:
    """Preprocess + extract with Topaz's general model; evaluate; return the summary and curve.

    With ``reuse``, a previous run's table and timings in ``workdir`` (same micrographs) are
    used instead of running Topaz again (its output does not depend on DeepPicker's model).
    """
    record = workdir / "topaz_run.json"
    pre, ext, table = topaz_commands(python, mics, workdir, rset, threshold=TOPAZ_DEFAULT_T)
    previous = json.loads(record.read_text()) if reuse and record.is_file() and table.is_file() else None
    if previous and previous.get("micrographs") == [m.name for m in mics]:
        timing = previous["timing"]
        log.info("reusing the Topaz run of %s in %s", previous["date"], workdir)
    else:
        timing = {"preprocess": run_timed(pre), "extract": run_timed(ext)}
        write_json(record, {"micrographs": [m.name for m in mics], "timing": timing,
                            "date": provenance()["date"]})
    picks = read_topaz_picks(table, [m.stem for m in mics])
    summary, report = summarise(picks, refs, rset.box,
                                {"at_default_threshold": TOPAZ_DEFAULT_T, "at_score_0": 0.0})
    summary["threshold_option"] = "default threshold"
    summary["default_threshold_note"] = ("extract's default -t -6 (log-likelihood ratio; keeps "
                                         "almost every candidate); score 0 is p = 0.5")
    summary.update(timing=timing, commands=[timing["preprocess"]["command"], timing["extract"]["command"]],
                   reused_run=previous is not None,
                   seconds_per_micrograph=(timing["preprocess"]["wall_s"] + timing["extract"]["wall_s"]) / len(mics))
    return summary, report


def run_deeppicker(box: int, model: str, mics, refs, workdir: Path, self_train: int = 0,
                   extra=(), threshold: str | None = None, curves: dict | None = None):
    """``deeppicker pick`` as a user runs it, then at ``--threshold 0`` for the curves.

    ``threshold`` None keeps the CLI default; otherwise it is passed as ``--threshold``. With
    ``self_train`` > 0 the first run self-trains and saves its model, which the ``--threshold 0``
    run then uses, so both describe the same model. ``curves`` caches the ``--threshold 0`` picks
    by model, so variants that differ only by threshold share one curve run.
    """
    stems = [m.stem for m in mics]
    base = [*deeppicker_cmd(), "pick", *[str(m) for m in mics], "--box", str(box),
            "--device", "cpu", *extra]
    model_used = model
    out = workdir / "picks"
    shutil.rmtree(out, ignore_errors=True)  # never let --resume reuse an earlier run's files
    cmd = [*base, "--model", model, "--out", str(out)]
    cmd += [] if threshold is None else ["--threshold", str(threshold)]
    if self_train:
        model_used = str(workdir / "selftrained.safetensors")
        cmd += ["--self-train", str(self_train), "--save-model", model_used]
    t_default = run_timed(cmd)
    default = load_picks(out, stems)
    curves = {} if curves is None else curves
    if model_used not in curves:
        out_all = workdir / "curve"
        shutil.rmtree(out_all, ignore_errors=True)
        t_all = run_timed([*base, "--model", model_used, "--threshold", "0", "--out", str(out_all)])
        curves[model_used] = (load_picks(out_all, stems), t_all, workdir.name)
    every, t_all, owner = curves[model_used]
    summary, report = summarise(every, refs, box, {})
    summary["curve_run"] = owner
    summary["self_train"] = self_train
    summary["at_default_threshold"] = at_picks(default, refs, box)
    summary["threshold_option"] = "CLI default" if threshold is None else f"--threshold {threshold}"
    # The curve run must contain each micrograph's picks (same model, lower threshold); the
    # lowest score kept per micrograph is the threshold actually applied there.
    lows = {k: float(p["score"].min()) for k, p in default.items() if len(p)}
    summary["at_default_threshold"]["lowest_score_kept"] = (
        {"min": min(lows.values()), "median": float(np.median(list(lows.values()))),
         "max": max(lows.values())} if lows else None)
    summary["curve_run_consistent"] = all(
        int((every[k]["score"] >= low).sum()) == len(default[k]) for k, low in lows.items())
    summary.update(timing={"picks": t_default, "threshold_0": t_all},
                   commands=[t_default["command"], t_all["command"]],
                   seconds_per_micrograph=t_default["wall_s"] / len(mics))
    return summary, report


def plot_set(key: str, rset, reports: dict, summaries: dict, path: Path) -> None:
    """Both tools' precision-recall curves on one axis, with default and best-F1 operating points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 7.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    r = np.linspace(0.01, 1, 400)
    for f in (0.2, 0.4, 0.6, 0.8):
        p = f * r / (2 * r - f)
        ok = (p > 0) & (p <= 1.0)
        ax.plot(r[ok], p[ok], color="0.85", lw=0.8, zorder=0)
        ax.annotate(f"F1={f}", (r[ok][0], 1.0), fontsize=7, color="0.5", xytext=(2, -9),
                    textcoords="offset points")
    colours, markers = {}, {}
    for name, report in reports.items():
        s = summaries[name]
        owner = s.get("curve_run", name)
        if owner not in colours:
            colours[owner] = colour = f"C{len(colours)}"
            label = name if s.get("self_train") else name.split(",")[0]
            label = label.replace(", --threshold", ", positives at --threshold")
            ax.plot(report.curve["recall"], report.curve["precision"], color=colour, lw=1.6,
                    label=f"{label}: AP {s['average_precision']:.2f}, best F1 {s['best_f1']:.2f}")
            if report.best_k:
                best = report.curve.iloc[report.best_k - 1]
                ax.plot(best["recall"], best["precision"], "*", color=colour, ms=12, mec="k", mew=0.5)
        colour = colours[owner]
        option = s.get("threshold_option", "default threshold")
        marker = markers.setdefault(option, "oDv^"[len(markers) % 4])
        d = s["at_default_threshold"]
        ax.plot(d["recall"], d["precision"], marker, color=colour, ms=7, mec="k", mew=0.5)
        if "at_score_0" in s:
            z = s["at_score_0"]
            ax.plot(z["recall"], z["precision"], "s", color=colour, ms=7, mec="k", mew=0.5)
            markers["Topaz score 0 (p = 0.5)"] = "s"
    for option, marker in markers.items():
        text = {"default threshold": "Topaz -t -6 (its default)",
                "CLI default": "the CLI default threshold"}.get(option, option)
        ax.plot([], [], marker, color="0.6", mec="k", ms=7, label=f"picks at {text}"
                if not option.startswith("Topaz") else option)
    ax.plot([], [], "*", color="0.6", mec="k", ms=12, label="best F1 over thresholds")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision",
           title=f"{rset.folder} (box {rset.box} px, {len(next(iter(reports.values())).matches)} "
                 "micrographs)\nfully automated, match within 0.2 x box")
    if key == "ribosome":
        ax.set_title(ax.get_title() + "\n(labels incomplete: precision is a lower bound)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    log.info("wrote %s", path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=sorted(SETS))
    parser.add_argument("--model", default="general", help="deeppicker model (file or 'general')")
    parser.add_argument("--set-model", action="append", default=[], metavar="KEY=FILE",
                        help="model for one set instead of --model (e.g. leave-one-molecule-out)")
    parser.add_argument("--self-train", type=int, default=1,
                        help="also run with --self-train N (0: skip)")
    parser.add_argument("--thresholds", nargs="+", default=["default", "auto"],
                        help="deeppicker --threshold settings to run ('default': the CLI's own)")
    parser.add_argument("--pick-args", default="", help="extra `deeppicker pick` options, quoted")
    parser.add_argument("--max-micrographs", type=int, default=None, help="first N per set (dry runs)")
    parser.add_argument("--no-topaz", action="store_true", help="skip Topaz (dry runs)")
    parser.add_argument("--topaz-python", default=None, help="python of the Topaz venv")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep intermediate files here (and reuse a Topaz run found there)")
    parser.add_argument("--out", type=Path, default=RESULTS / "topaz_compare.json")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--tag", default="", help="suffix for the plot names (dry runs)")
    parser.add_argument("--replot", action="store_true",
                        help="only redraw the plots from the curves kept in --workdir")
    args = parser.parse_args(argv)
    setup_logging()
    if args.replot:
        for key in args.sets:
            with open(args.workdir / key / "plot_data.pkl", "rb") as fh:
                summaries, reports = pickle.load(fh)
            plot_set(key, SETS[key], reports, summaries, args.images / f"bench_topaz_{key}{args.tag}.png")
        return 0
    result = {"provenance": provenance(), "matching": "optimal one-to-one, centres within 0.2 x box "
              "(core.evaluation.evaluate); curves ranked by score, pooled over micrographs",
              "topaz": {"version": "0.3.20", "model": TOPAZ_MODEL}, "deeppicker_model": args.model,
              "sets": {}}
    set_models = dict(item.split("=", 1) for item in args.set_model)
    python = None if args.no_topaz else topaz_python(args.topaz_python)
    extra = shlex.split(args.pick_args)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        for key in args.sets:
            rset = SETS[key]
            refs = rset.references()
            mics = [m for m in rset.micrographs() if m.stem in refs][: args.max_micrographs]
            refs = {m.stem: refs[m.stem] for m in mics}
            model, identity = snapshot_model(set_models.get(key, args.model), work / "models")
            entry = {"folder": rset.folder, "box": rset.box, "n_micrographs": len(mics),
                     "n_reference": int(sum(len(r) for r in refs.values())),
                     "deeppicker_model": identity,
                     "topaz_scale": rset.topaz_scale, "topaz_radius": rset.topaz_radius,
                     "load_average_start": loadavg()}
            summaries, reports = {}, {}
            if python:
                log.info("%s: Topaz on %d micrographs", key, len(mics))
                summaries["Topaz resnet16_u64"], reports["Topaz resnet16_u64"] = run_topaz(
                    python, rset, mics, refs, work / key / "topaz", reuse=args.workdir is not None)
            curves = {}
            for rounds in [0] + ([args.self_train] if args.self_train else []):
                for mode in args.thresholds:
                    threshold = None if mode == "default" else mode
                    name = f"DeepPicker {display_name(model)}"
                    name += f" + self-train x{rounds}" if rounds else ""
                    name += ", " + ("CLI default threshold" if threshold is None else f"--threshold {mode}")
                    log.info("%s: %s", key, name)
                    start = time.perf_counter()
                    summaries[name], reports[name] = run_deeppicker(
                        rset.box, model, mics, refs, work / key / f"deeppicker_st{rounds}_{mode}",
                        rounds, extra, threshold, curves)
                    log.info("%s done in %.0f s", name, time.perf_counter() - start)
            with open(work / key / "plot_data.pkl", "wb") as fh:  # for --replot
                pickle.dump((summaries, reports), fh)
            entry["tools"] = summaries
            entry["load_average_end"] = loadavg()
            result["sets"][key] = entry
            plot_set(key, rset, reports, summaries, args.images / f"bench_topaz_{key}{args.tag}.png")
            write_json(args.out, result)
    for key, entry in result["sets"].items():
        for name, s in entry["tools"].items():
            d = s["at_default_threshold"]
            log.info("%-9s %-60s P %.3f R %.3f F1 %.3f CE %.3f | best F1 %.3f AP %.3f", key, name,
                     d["precision"] or np.nan, d["recall"] or np.nan, d["f1"] or np.nan,
                     d["centre_error"] or np.nan, s["best_f1"], s["average_precision"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
