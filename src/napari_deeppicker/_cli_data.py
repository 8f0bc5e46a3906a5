"""``deeppicker simulate`` and ``deeppicker evaluate``: make ground truth, score picks with it."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from napari_deeppicker._cli_common import note, progress_bar
from napari_deeppicker.core.errors import DeepPickerError

logger = logging.getLogger(__name__)


def simulate(outdir: Path, n: int, size: int, *, seed: int = 0, noise_only: bool = False,
             shapes=None, box: int = 64) -> list[Path]:
    """Simulate a dataset with a progress bar (see :func:`core.synthetic.simulate_dataset`)."""
    from napari_deeppicker.core.synthetic import simulate_dataset

    with progress_bar(total=n, desc="simulating", unit="micrograph") as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        return simulate_dataset(outdir, n=n, size=size, seed=seed, noise_only=noise_only,
                                shapes=shapes, box=box, progress=progress)


def cmd_simulate(args) -> int:
    """Write simulated micrographs and their ground truth (``deeppicker simulate``)."""
    if args.size < args.box:
        raise DeepPickerError(f"--size {args.size} is smaller than the box of {args.box} px")
    outdir = Path(args.outdir)
    paths = simulate(outdir, args.n, args.size, seed=args.seed, noise_only=args.noise_only,
                     shapes=args.shape, box=args.box)
    note(f"wrote {len(paths)} micrographs to {outdir / 'micrographs'} and their ground truth "
         f"to {outdir / 'coords'}")
    return 0


def load_pairs(picks: str, reference: str, box: int, threshold: float | None = None):
    """Read picks and reference coordinates keyed by micrograph stem and keep the common ones.

    Parameters
    ----------
    picks, reference : str
        Folders of per-micrograph files or multi-micrograph files.
    box : int
        Box size (for BOX files).
    threshold : float, optional
        Keep only the picks scoring at least this.

    Returns
    -------
    picks_by_mic, refs_by_mic : dict of str to DataFrame
        The micrographs present in both.

    Raises
    ------
    DeepPickerError
        If a file is malformed or no micrograph is in both.
    """
    from napari_deeppicker.core.io import read_coordinates_by_micrograph

    picked = read_coordinates_by_micrograph(picks, box=box)
    refs = read_coordinates_by_micrograph(reference, box=box)
    common = sorted(set(picked) & set(refs))
    if not common:
        raise DeepPickerError(
            f"no micrograph has both picks in {picks} and reference coordinates in {reference} "
            f"(picks: {', '.join(sorted(picked)[:5])}...; "
            f"reference: {', '.join(sorted(refs)[:5])}...)"
        )
    for name in sorted(set(picked) - set(refs)):
        logger.warning("no reference coordinates for %s in %s: not evaluated", name, reference)
    missing = sorted(set(refs) - set(picked))
    if missing:
        logger.info("%d micrographs of the reference have no picks: not evaluated", len(missing))
    picked = {name: picked[name] for name in common}
    if threshold is not None:
        for name, df in picked.items():
            if "score" not in df:
                raise DeepPickerError(f"--threshold: the picks of {name} in {picks} have no scores")
            picked[name] = df[df["score"] >= threshold].reset_index(drop=True)
    return picked, {name: refs[name] for name in common}


def cmd_evaluate(args) -> int:
    """Compare picks with reference coordinates (``deeppicker evaluate``)."""
    from napari_deeppicker.core.evaluation import evaluate, plot_report

    picked, refs = load_pairs(args.picks, args.reference, args.box, args.threshold)
    report = evaluate(picked, refs, args.box, radius=args.radius)
    if args.plot:
        plot_report(report, args.plot, title=f"{args.picks} vs {args.reference}")
        note(f"wrote the plot to {args.plot}")
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(report.table() + "\n")
    return 0
