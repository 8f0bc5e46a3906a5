"""``deeppicker relion-external``: run as a RELION 4/5 External job (see docs/RELION.md).

RELION calls ``EXE --o External/jobNNN/ --in_mics CtfFind/jobMMM/micrographs_ctf.star
--LABEL VALUE ... --j J [--pipeline_control DIR]`` from the project folder, with the labels and
values of the job's Params tab. Arguments this command does not know are reported and ignored,
so that RELION's own (``--j``, ``--pipeline_control``, later additions) never break the job.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

from napari_deeppicker._cli_common import EXIT_ERROR, EXIT_INTERRUPTED, error, note

logger = logging.getLogger(__name__)

_TRUE = {"", "1", "yes", "y", "true", "on"}
_FALSE = {"0", "no", "n", "false", "off"}


class _YesNo(argparse.Action):
    """A flag that may also be given a value, as RELION does: ``--invert``, ``--invert no``."""

    def __call__(self, parser, namespace, values, option_string=None):
        text = "" if values is None else str(values).strip().lower()
        if text not in _TRUE | _FALSE:
            parser.error(f"{option_string} expects yes or no, not {values!r}")
        setattr(namespace, self.dest, text in _TRUE)


def add_relion_parser(sub) -> None:
    """Register ``relion-external``; its arguments are parsed by :func:`relion_parser`."""
    parser = sub.add_parser(
        "relion-external", prefix_chars="+", add_help=False,
        help="run as a RELION 4/5 External job (--o, --in_mics; see docs/RELION.md)",
        description="Run as a RELION External job; `deeppicker relion-external --help` lists "
                    "its options.")
    parser.add_argument("relion_args", nargs=argparse.REMAINDER)


def relion_parser() -> argparse.ArgumentParser:
    """The tolerant parser of the arguments RELION passes (underscores or dashes accepted)."""
    from napari_deeppicker.cli import THRESHOLD
    parser = argparse.ArgumentParser(
        prog="deeppicker relion-external", allow_abbrev=False,
        description="Pick the micrographs of a RELION micrographs STAR file as a RELION External "
                    "job. Writes OUT/<folders>/<micrograph>_deeppicker.star, OUT/autopick.star "
                    "(for Extract), OUT/picks.star (every pick), OUT/coords_suffix_deeppicker.star,"
                    " OUT/RELION_OUTPUT_NODES.star and RELION_JOB_EXIT_SUCCESS (or _FAILURE). "
                    "Unknown arguments are ignored.")
    add = parser.add_argument
    add("--o", dest="outdir", required=True, metavar="DIR", help="job folder (External/jobNNN/)")
    add("--in_mics", "--in-mics", dest="in_mics", required=True, metavar="STAR",
        help="micrographs STAR file (e.g. CtfFind/job003/micrographs_ctf.star)")
    add("--model", default="general", help="model file or 'general' (default: general)")
    add("--box", required=True, type=int, metavar="PX", help="particle box in micrograph pixels")
    add("--threshold", type=THRESHOLD, default=0.5,
        help="keep picks scoring above this (0-1), or auto (per micrograph, see deeppicker pick)")
    add("--top", type=int, metavar="N", help="keep at most N picks per micrograph")
    add("--step", type=int, choices=(4, 2, 1), default=4, help="score-map step (4, 2 or 1)")
    add("--edge", type=float, default=0.5, help="distance from the border, fraction of the box")
    add("--null-check", nargs="?", action=_YesNo, default=True,
        help="keep no pick on micrographs their phase-randomised noise null explains (yes/no)")
    add("--invert", nargs="?", action=_YesNo, default=False,
        help="particles are bright on the background (yes/no; alone means yes)")
    add("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add("--batch_size", "--batch-size", dest="batch_size", type=int, metavar="N",
        help="micrographs per forward pass on a GPU")
    add("--scheduler", metavar="ADDRESS", help="Dask scheduler (see docs/CLUSTER.md)")
    add("--pick_name", "--pick-name", dest="pick_name", default="deeppicker",
        help="suffix of the per-micrograph files (<mic>_<name>.star)")
    add("--relion3", nargs="?", action=_YesNo, default=False,
        help="declare the RELION 3.1 output node (coords_suffix file) instead of autopick.star")
    add("--overwrite", nargs="?", action=_YesNo, default=False,
        help="re-pick micrographs picked by an earlier run of the job")
    add("--j", type=int, default=1, help="threads given by RELION (not used)")
    add("--pipeline_control", metavar="DIR", help="given by RELION (not used)")
    return parser


def cmd_relion(args) -> int:
    """Run the External job; returns the exit code (0, 2 bad input, 130 aborted)."""
    parser = relion_parser()
    argv = list(args.relion_args)
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        return 0
    try:
        options, unknown = parser.parse_known_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if unknown:
        note(f"ignoring arguments this job does not use: {' '.join(unknown)}")
    from napari_deeppicker.core import relion

    outdir = Path(options.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    relion.clear_exit_files(outdir)
    try:
        code = _run(options, outdir)
    except KeyboardInterrupt:
        relion.mark_exit(outdir, relion.ABORTED)
        note("interrupted: RELION_JOB_EXIT_ABORTED written")
        return EXIT_INTERRUPTED
    except BaseException as err:
        relion.mark_exit(outdir, relion.FAILURE)
        if isinstance(err, (ValueError, OSError)):
            error(err)
            return EXIT_ERROR
        raise
    return code


def _run(options, outdir: Path) -> int:
    from napari_deeppicker._cli_batch import make_picker
    from napari_deeppicker._cli_common import resolve_device
    from napari_deeppicker.core import relion
    from napari_deeppicker.core.batch import BatchConfig, resolve_inputs
    from napari_deeppicker.core.errors import DeepPickerError
    from napari_deeppicker.core.model import load_model
    from napari_deeppicker.core.picking import PickConfig

    items = resolve_inputs([options.in_mics])
    device = resolve_device(options.device)
    model = load_model(options.model, device=device)
    if options.invert:
        model.preprocess = replace(model.preprocess, invert=not model.preprocess.invert)
    pick_config = PickConfig(threshold=options.threshold, top_n=options.top, step=options.step,
                             edge=options.edge, null_check=options.null_check)
    size = options.batch_size or (4 if device.type == "cuda" else 1)
    config = BatchConfig(batch_size=size, combined="picks.star", overwrite=options.overwrite)
    with make_picker(model, items, options.box, outdir, pick_config=pick_config, config=config,
                     device=device, scheduler=options.scheduler,
                     layout=relion.relion_layout(outdir, options.pick_name),
                     should_stop=lambda: relion.abort_requested(outdir)) as picker:
        failed = []
        for progress in picker.run():
            if progress.status == "failed":
                error(progress.error)
                failed.append(progress.item.name)
            else:
                note(f"{progress.done}/{progress.total} {progress.item.name}: "
                     f"{progress.n_picks} picks ({progress.status})")
        _, listing = picker.combined_paths
    if not picker.completed:
        relion.mark_exit(outdir, relion.ABORTED)
        note("aborted on request (RELION_JOB_ABORT_NOW): RELION_JOB_EXIT_ABORTED written")
        return EXIT_INTERRUPTED
    if failed:
        raise DeepPickerError(f"{len(failed)} of {len(items)} micrographs could not be picked "
                              f"({', '.join(failed[:5])}); fix them and continue the job")
    relion.write_job_files(outdir, options.in_mics, listing, pick_name=options.pick_name,
                           relion3=options.relion3)
    relion.mark_exit(outdir, relion.SUCCESS)
    note(f"{picker.n_picks} picks in {len(items)} micrographs; {listing} lists their files")
    return 0
