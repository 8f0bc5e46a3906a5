"""The "Einstein from noise" guard measured: how often it empties noise, and never real data.

Every micrograph is picked with the default settings (the guard on), and the guard's decision
(:mod:`napari_deeppicker.core.nullcheck`) is recorded with its two statistics:

- pure-noise micrographs (the cases of ``general_noise.py``, the benchmark seeds 4322-4323; the
  rule's two numbers were set on seeds 5000-5001): every one should be declared particle-free;
- real micrographs of each molecule, picked by the leave-one-molecule-out models trained without
  it (``general_lomo.py`` work folder), and by the shipped model: none should be;
- simulated micrographs of a held-out shape (raw and denoised): none should be.

Usage::

    python benchmarks/null_check.py [--lomo-work /tmp/deeppicker_lomo] [--seeds 2]
        [--out benchmarks/results/null_check.json] [--plot docs/images/bench_null_check.png]
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from napari_deeppicker.core.model import load_model
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.synthetic import simulate_micrograph

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "scripts"))
import train_general as tg
from _bench import IMAGES, RESULTS, provenance, write_json
from general_lomo import synthetic_test
from general_noise import CASES

log = logging.getLogger("null_check")


def decide(model, image, box) -> dict:
    """Guard decision and statistics of one micrograph (default settings, threshold 0.5)."""
    picks, score_map = pick_micrograph(model, image, box, PickConfig())
    check = picks.attrs["null_check"]
    raw, _ = pick_micrograph(model, image, box, PickConfig(null_check=False))
    return {**check, "picks": len(picks), "picks_without_guard": len(raw),
            "score_map_max": float(score_map.data.max())}


def noise_rows(model, seeds: int) -> list[dict]:
    rows = []
    for box, denoised, size, ice, carbon in CASES:
        for seed in range(seeds):
            image, _ = simulate_micrograph(size, box=box, noise_only=True, seed=4322 + seed,
                                           denoised=denoised, ice=ice, carbon=carbon)
            rows.append({"case": f"box {box}, {size} px, {'denoised' if denoised else 'raw'}"
                                 f"{', ice' if ice else ''}{', carbon' if carbon else ''}",
                         "seed": seed, **decide(model, image, box)})
            log.info("noise %s", rows[-1])
    return rows


def real_rows(model, key: str) -> list[dict]:
    images, _, box = tg.load_real(key)
    rows = [{"micrograph": name, **decide(model, image, box)} for name, image in images.items()]
    log.info("%s: %d of %d declared particle-free", key, sum(r["particle_free"] for r in rows),
             len(rows))
    return rows


def synthetic_rows(model) -> list[dict]:
    rows = []
    for look in ("raw", "denoised"):
        images, _ = synthetic_test(look)
        for name, (image, box) in images.items():
            rows.append({"micrograph": name, **decide(model, image, box)})
    return rows


def summary(rows: list[dict]) -> dict:
    return {"micrographs": len(rows),
            "particle_free": int(sum(r["particle_free"] for r in rows)),
            "with_a_pick_above_0.5": int(sum(r["picks"] > 0 for r in rows)),
            "with_a_pick_above_0.5_without_guard": int(sum(r["picks_without_guard"] > 0
                                                          for r in rows)),
            "evidence_range": [float(min(r["evidence"] for r in rows)),
                               float(max(r["evidence"] for r in rows))],
            "ks_pvalue_min": float(min(r["ks_pvalue"] for r in rows))}


def plot(groups: dict, path: Path, margin: float, alpha: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"noise": ("x", "tab:red"), "real": ("o", "tab:blue"), "synthetic": ("s", "tab:green")}
    for name, rows in groups.items():
        kind = name.split(":")[0]
        marker, colour = markers[kind]
        ev = [r["evidence"] for r in rows]
        p = [max(r["ks_pvalue"], 1e-30) for r in rows]
        ax.scatter(ev, p, marker=marker, color=colour, alpha=0.7, label=f"{name} ({len(rows)})")
    ax.set_yscale("log")
    ax.axvline(margin, color="k", lw=1, ls="--")
    ax.axhline(alpha, color="k", lw=1, ls="--")
    ax.fill_betweenx([alpha, 1.5], -20, margin, color="tab:red", alpha=0.08)
    ax.set_xlim(min(-3, min(r["evidence"] for rows in groups.values() for r in rows) - 0.5),
                max(r["evidence"] for rows in groups.values() for r in rows) + 0.5)
    ax.set_ylim(1e-30, 1.5)
    ax.set_xlabel("top-10 evidence: mean logit of best candidates minus the null's")
    ax.set_ylabel("one-sided KS p-value (micrograph vs its null)")
    ax.set_title("Einstein-from-noise guard: shaded = declared particle-free")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lomo-work", default="/tmp/deeppicker_lomo")
    parser.add_argument("--recipe", default="full")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "null_check.json"))
    parser.add_argument("--plot", default=str(IMAGES / "bench_null_check.png"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("napari_deeppicker").setLevel(logging.WARNING)
    general = load_model("general")
    groups = {"noise: general model": noise_rows(general, args.seeds)}
    for key in ("betagal", "ribosome"):
        path = Path(args.lomo_work) / f"{args.recipe}_no-{key}_seed0.safetensors"
        if path.is_file():
            lomo = load_model(path)
            groups[f"real: {key}, model without it"] = real_rows(lomo, key)
            groups[f"noise: model without {key}"] = noise_rows(lomo, 1)
        else:
            log.warning("no leave-one-out model %s: run general_lomo.py first", path)
        groups[f"real: {key}, general model"] = real_rows(general, key)
    groups["synthetic: held-out shape, general model"] = synthetic_rows(general)
    config = PickConfig()
    result = {"provenance": provenance(), "rule": {"top": config.null_top,
                                                   "margin": config.null_margin,
                                                   "alpha": config.null_alpha},
              "summary": {k: summary(v) for k, v in groups.items()}, "groups": groups}
    write_json(Path(args.out), result)
    plot(groups, Path(args.plot), config.null_margin, config.null_alpha)
    for name, s in result["summary"].items():
        log.info("%-45s %s", name, s)


if __name__ == "__main__":
    main()
