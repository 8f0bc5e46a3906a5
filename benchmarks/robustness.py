"""Robustness figures of the DeepPicker paper, for the general model, fully automated.

1. **Recall against defocus**: simulated micrographs (``core.synthetic``) of one particle shape at
   underfocus 1.0, 1.5, ..., 3.5 um, at two doses (40 and 15 e/A^2). Every defocus uses the same
   seeds, so the particle positions, orientations and ice are the same and only the CTF changes. The default shape variant
   (``multilobe``, ``--shape-seed 20261121``) is outside the variants drawn to train the general
   model (``scripts/train_general.py`` draws shape seeds 0-9999); its family is in the training mix.
2. **"Einstein from noise"**: score maps of micrographs without any particle: simulated
   ``noise_only`` micrographs (same ice, CTF and shot noise, raw and denoised looks) and real
   micrographs with their Fourier phases randomised (``core.preprocess.phase_randomise``: same
   power spectrum, no particle). Reported: the score histogram, maximum, 99th percentile,
   fraction of the map above 0.5, the picks above 0.5 (must be none) and the picks the CLI makes
   at its default threshold; the real micrographs' own score maps are shown for comparison.

Everything is picked with the real command line (``deeppicker pick --model MODEL``, defaults,
plus ``--threshold 0`` for the curves and ``--scores`` for the maps), scored with
``core.evaluation.evaluate`` (0.2 x box).

Usage::

    python benchmarks/robustness.py [--model general] [--n 4] [--dose 40 15] [--shape multilobe]
        [--box 64] [--skip defocus|noise]

Writes ``benchmarks/results/robustness.json``, ``docs/images/bench_defocus.png`` and
``docs/images/bench_noise.png``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import tempfile
from pathlib import Path

import numpy as np

from _bench import (IMAGES, RESULTS, SETS, deeppicker_cmd, display_name, loadavg, provenance, run_timed,
                    setup_logging, snapshot_model, write_json)
from napari_deeppicker.core.evaluation import noise_score_summary
from napari_deeppicker.core.io import read_micrograph, write_micrograph
from napari_deeppicker.core.preprocess import phase_randomise
from napari_deeppicker.core.synthetic import simulate_micrograph
from topaz_compare import load_picks, run_deeppicker

log = logging.getLogger("benchmark")
DEFOCI = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)


def _stem(dose: float, defocus: float, k: int) -> str:
    return f"dose{dose:g}_defocus{defocus:.1f}_{k}"


def defocus_series(args, work: Path, extra) -> dict:
    """Simulate the series at every dose, pick it with the CLI, evaluate each (dose, defocus)."""
    from napari_deeppicker.core.evaluation import evaluate

    mics, refs = [], {}
    for dose in args.dose:
        for d in args.defocus:
            for k in range(args.n):
                image, xy = simulate_micrograph(args.size, shape=args.shape, shape_seed=args.shape_seed,
                                                box=args.box, defocus_um=d, dose=dose, seed=1000 + k)
                stem = _stem(dose, d, k)
                mics.append(write_micrograph_path(work / "defocus" / f"{stem}.mrc", image,
                                                  float(xy.attrs["simulation"]["pixel_size"])))
                refs[stem] = xy
    log.info("defocus series: %d micrographs simulated; picking", len(mics))
    curves = {}
    overall, _ = run_deeppicker(args.box, args.model, mics, refs, work / "defocus_pick", 0, extra,
                                None, curves)
    auto, _ = run_deeppicker(args.box, args.model, mics, refs, work / "defocus_auto", 0, extra,
                             "auto", curves)
    every = load_picks(work / "defocus_pick" / "curve", refs)
    default = load_picks(work / "defocus_pick" / "picks", refs)
    automatic = load_picks(work / "defocus_auto" / "picks", refs)
    rows = []
    for dose in args.dose:
        for d in args.defocus:
            stems = [_stem(dose, d, k) for k in range(args.n)]
            sub_refs = {s: refs[s] for s in stems}
            rep = evaluate({s: every[s] for s in stems}, sub_refs, args.box)
            at_default = evaluate({s: default[s] for s in stems}, sub_refs, args.box).overall
            at_auto = evaluate({s: automatic[s] for s in stems}, sub_refs, args.box).overall
            n_ref = rep.overall["n_reference"]
            top = rep.curve.iloc[min(n_ref, len(rep.curve)) - 1] if len(rep.curve) else None
            rows.append({
                "dose": dose, "defocus_um": d, "n_micrographs": len(stems), "n_reference": n_ref,
                "recall_default": at_default["recall"], "precision_default": at_default["precision"],
                "f1_default": at_default["f1"], "n_picks_default": at_default["n_picks"],
                "centre_error_default": at_default["centre_error"],
                "recall_auto": at_auto["recall"], "precision_auto": at_auto["precision"],
                "f1_auto": at_auto["f1"], "n_picks_auto": at_auto["n_picks"],
                "recall_at_0.5": rep.at_threshold(0.5)["recall"],
                "precision_at_0.5": rep.at_threshold(0.5)["precision"],
                "recall_top_n_true": None if top is None else float(top["recall"]),
                "best_f1": rep.best_f1, "average_precision": rep.average_precision})
            log.info("dose %g, defocus %.1f um: recall %.3f (default) %.3f (auto), best F1 %.3f, "
                     "AP %.3f", dose, d, rows[-1]["recall_default"], rows[-1]["recall_auto"],
                     rep.best_f1, rep.average_precision)
    return {"shape": args.shape, "shape_seed": args.shape_seed, "box": args.box, "size": args.size,
            "doses": args.dose, "seeds": [1000 + k for k in range(args.n)], "rows": rows,
            "commands": overall["commands"] + auto["commands"][:1],
            "overall": {k: overall[k] for k in ("best_f1", "average_precision")}}


def noise_inputs(args, work: Path) -> list[dict]:
    """Particle-free micrographs (and, for comparison, the real ones), grouped by kind and box."""
    groups = []
    for look in ("raw", "denoised"):
        paths = []
        for s in range(args.noise_n):
            image, _ = simulate_micrograph(args.size, box=args.box, noise_only=True,
                                           denoised=look == "denoised", seed=7000 + s)
            paths.append(write_micrograph_path(work / f"noise_{look}" / f"noise_{look}_{s}.mrc", image))
        groups.append({"name": f"simulated noise only ({look} look), box {args.box}", "kind": "null",
                       "dataset": f"simulated {look}", "box": args.box, "paths": paths})
    for key, rset in SETS.items():
        real = rset.micrographs()[: args.real_n]
        rng = np.random.default_rng(11)
        paths = [write_micrograph_path(work / f"phase_{key}" / f"{m.stem}_phaserand.mrc",
                                       phase_randomise(np.asarray(read_micrograph(m).data), rng))
                 for m in real]
        groups.append({"name": f"{key} phase-randomised, box {rset.box}", "kind": "null",
                       "dataset": key, "box": rset.box, "paths": paths})
        groups.append({"name": f"{key} real micrographs, box {rset.box}", "kind": "real",
                       "dataset": key, "box": rset.box, "paths": real})
    return groups


def write_micrograph_path(path: Path, image, pixel_size=None) -> Path:
    """Write a micrograph (creating its folder) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_micrograph(path, image, pixel_size)
    return path


def noise_test(args, work: Path, extra) -> tuple[list, dict]:
    """Pick each group with the CLI (defaults, score maps on); summarise the maps and picks."""
    rows, maps = [], {}
    for k, group in enumerate(noise_inputs(args, work)):
        out = work / f"noise_pick_{k}"
        timing = run_timed([*deeppicker_cmd(), "pick", *[str(p) for p in group["paths"]],
                            "--model", args.model, "--box", str(group["box"]), "--scores",
                            "--device", "cpu", "--out", str(out), *extra])
        picks = load_picks(out, [p.stem for p in group["paths"]])
        auto = run_timed([*deeppicker_cmd(), "pick", *[str(p) for p in group["paths"]],
                          "--model", args.model, "--box", str(group["box"]), "--threshold", "auto",
                          "--device", "cpu", "--out", str(out.with_name(out.name + "_auto")), *extra])
        auto_picks = load_picks(out.with_name(out.name + "_auto"), [p.stem for p in group["paths"]])
        values = np.concatenate([np.asarray(read_micrograph(out / f"{p.stem}_scores.mrc").data).ravel()
                                 for p in group["paths"]])
        maps[group["name"]] = values
        summary = noise_score_summary(values, 0.5)
        n_above = int(sum((p["score"] > 0.5).sum() for p in picks.values()))
        rows.append({"group": group["name"], "kind": group["kind"], "dataset": group["dataset"],
                     "box": group["box"],
                     "n_micrographs": len(group["paths"]), "map_values": summary["n"],
                     "max_score": summary["max"], "p99_score": summary["p99"],
                     "fraction_above_0.5": summary["fraction_above"], "picks_above_0.5": n_above,
                     "picks_at_default_threshold": int(sum(len(p) for p in picks.values())),
                     "picks_threshold_auto": int(sum(len(p) for p in auto_picks.values())),
                     "declared_particle_free": _particle_free(out),
                     "commands": [timing["command"], auto["command"]]})
        log.info("%s: max %.3f, fraction > 0.5 %.2e, picks > 0.5: %d, default picks: %d, auto: %d",
                 group["name"], summary["max"], summary["fraction_above"], n_above,
                 rows[-1]["picks_at_default_threshold"], rows[-1]["picks_threshold_auto"])
    return rows, maps


def _particle_free(out: Path) -> int:
    """Micrographs of a ``deeppicker pick`` run that its noise-null guard emptied."""
    import json

    summary = json.loads((out / "pick_summary.json").read_text())
    return int(summary.get("n_particle_free", 0))


def plot_defocus(result: dict, path: Path, model: str) -> None:
    """Recall (CLI default and automatic threshold) and threshold-free scores against defocus."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    for k, dose in enumerate(result["doses"]):
        rows = [r for r in result["rows"] if r["dose"] == dose]
        d, colour = [r["defocus_um"] for r in rows], f"C{k}"

        def values(key):
            return [np.nan if r[key] is None else r[key] for r in rows]

        left.plot(d, values("recall_default"), "o-", color=colour,
                  label=f"dose {dose:g} e/A²: recall, CLI default threshold")
        left.plot(d, values("recall_auto"), "s--", color=colour,
                  label=f"dose {dose:g} e/A²: recall, --threshold auto")
        left.plot(d, values("precision_auto"), "x:", color=colour,
                  label=f"dose {dose:g} e/A²: precision, --threshold auto")
        right.plot(d, values("average_precision"), "v-", color=colour,
                   label=f"dose {dose:g} e/A²: average precision")
        right.plot(d, values("best_f1"), "D--", color=colour,
                   label=f"dose {dose:g} e/A²: best F1 over thresholds")
    n = result["rows"][0]["n_micrographs"]
    left.set(title="Recall at the operating threshold", xlabel="defocus (underfocus, um)",
             ylabel="fraction", ylim=(0, 1.02))
    right.set(title="Threshold-free accuracy", xlabel="defocus (underfocus, um)",
              ylabel="fraction", ylim=(0, 1.02))
    for ax in (left, right):
        ax.legend(loc="lower right", fontsize=7.5)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Recall against defocus: model '{display_name(model)}', simulated "
                 f"'{result['shape']}' (variant {result['shape_seed']}), box {result['box']} px, "
                 f"{n} micrographs of {result['size']} px per point", fontsize=10)
    fig.savefig(path, dpi=110)
    log.info("wrote %s", path)


def plot_noise(rows: list, maps: dict, path: Path, model: str) -> None:
    """Score histograms of the particle-free maps, the real maps dashed for comparison."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.6, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bins = np.linspace(0, 1, 51)
    datasets = list(dict.fromkeys(row["dataset"] for row in rows))
    for row in rows:
        values = maps[row["group"]]
        hist, _ = np.histogram(values, bins=bins)
        frac = hist / max(values.size, 1)
        style = "-" if row["kind"] == "null" else "--"
        ax.step(bins[1:], np.where(frac > 0, frac, np.nan), where="pre", ls=style,
                color=f"C{datasets.index(row['dataset'])}",
                label=f"{row['group']}: max {row['max_score']:.2f}; picks > 0.5: "
                      f"{row['picks_above_0.5']} ({row['declared_particle_free']}/"
                      f"{row['n_micrographs']} emptied by the guard)")
    ax.axvline(0.5, color="k", lw=0.8)
    ax.text(0.51, 0.02, "0.5: no pick on a particle-free\nmicrograph may score above",
            transform=ax.transAxes,
            fontsize=7, va="bottom")
    ax.set(yscale="log", xlabel="particle score (score-map value)", ylabel="fraction of map positions",
           xlim=(0, 1), title=f"'Einstein from noise': scores on particle-free micrographs (solid)\n"
                              f"vs the real micrographs (dashed), model '{display_name(model)}'")
    ax.title.set_fontsize(10)
    ax.legend(fontsize=7, loc="upper right")
    fig.savefig(path, dpi=110)
    log.info("wrote %s", path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="general", help="model file or 'general'")
    parser.add_argument("--defocus", type=float, nargs="+", default=list(DEFOCI), help="um")
    parser.add_argument("--n", type=int, default=4, help="micrographs per defocus")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--shape", default="multilobe")
    parser.add_argument("--shape-seed", type=int, default=20261121)
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--dose", type=float, nargs="+", default=[40.0, 15.0],
                        help="e/A^2, one series each (simulation default 40; 15 is harder)")
    parser.add_argument("--noise-n", type=int, default=4, help="noise micrographs per look")
    parser.add_argument("--real-n", type=int, default=3, help="real micrographs per set to randomise")
    parser.add_argument("--pick-args", default="", help="extra `deeppicker pick` options, quoted")
    parser.add_argument("--skip", choices=["defocus", "noise"], action="append", default=[])
    parser.add_argument("--out", type=Path, default=RESULTS / "robustness.json")
    parser.add_argument("--images", type=Path, default=IMAGES)
    parser.add_argument("--tag", default="", help="suffix for the plot names (dry runs)")
    args = parser.parse_args(argv)
    setup_logging()
    extra = shlex.split(args.pick_args)
    result = {"provenance": provenance(), "model": args.model}
    args.images.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args.model, result["model_identity"] = snapshot_model(args.model, work / "models")
        if "defocus" not in args.skip:
            result["defocus"] = defocus_series(args, work, extra)
            plot_defocus(result["defocus"], args.images / f"bench_defocus{args.tag}.png", args.model)
            write_json(args.out, result)
        if "noise" not in args.skip:
            rows, maps = noise_test(args, work, extra)
            result["noise"] = rows
            plot_noise(rows, maps, args.images / f"bench_noise{args.tag}.png", args.model)
    result["load_average_end"] = loadavg()
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
