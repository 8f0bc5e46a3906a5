"""The ``deeppicker`` command line: simulate, train, pick, evaluate, demo, watch, relion-external.

A thin layer over :mod:`napari_deeppicker.core`: this module builds the argument parser and
dispatches to the subcommands in ``_cli_*.py``, which are imported only when used (``--help``
never loads torch). Bad input (:class:`~napari_deeppicker.core.errors.DeepPickerError`) ends
with ``deeppicker: error: <message>`` on stderr and exit code 2, Ctrl-C with code 130.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
from collections.abc import Sequence

from napari_deeppicker import __version__
from napari_deeppicker._cli_common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    PROG,
    cli_logging,
    error,
    note,
)
from napari_deeppicker.core.errors import DeepPickerError

COMMANDS = {
    "simulate": "napari_deeppicker._cli_data:cmd_simulate",
    "train": "napari_deeppicker._cli_train:cmd_train",
    "pick": "napari_deeppicker._cli_pick:cmd_pick",
    "evaluate": "napari_deeppicker._cli_data:cmd_evaluate",
    "demo": "napari_deeppicker._cli_demo:cmd_demo",
    "watch": "napari_deeppicker._cli_batch:cmd_watch",
    "relion-external": "napari_deeppicker._cli_relion:cmd_relion",
}
_DEVICE_HELP = "compute device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"

DESCRIPTION = """\
Pick particles in cryo-EM micrographs with the DeepPicker CNN (Wang et al. 2016).

Coordinates are particle centres in pixels of the MRC data array (x = column, y = row).
Micrographs and coordinates files are paired by file stem (mic1.mrc <-> mic1.star or
mic1_autopick.star). Run `deeppicker COMMAND --help` for the options of a command.
"""

EPILOG = """\
examples:
  deeppicker simulate sim --n 4 --size 1024
  deeppicker train --micrographs sim/micrographs --coords sim/coords --box 64 --out my.safetensors
  deeppicker pick sim/micrographs --model my.safetensors --box 64 --out picks --scores
  deeppicker evaluate --picks picks --reference sim/coords --box 64 --plot pr.png
  deeppicker demo

exit codes: 0 success, 2 bad input or usage, 130 interrupted (Ctrl-C).
"""


class _Formatter(argparse.HelpFormatter):
    """Show the defaults that carry information (not None, False or a counter's 0)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default is None or action.default is False
        quiet = quiet or action.default == argparse.SUPPRESS
        quiet = quiet or isinstance(action, argparse._CountAction)
        if "%(default)" in text or quiet or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class _RawFormatter(argparse.RawDescriptionHelpFormatter, _Formatter):
    """Also keep the line breaks of the description and epilog (the main help page)."""


def _number(kind, minimum=None, maximum=None, *, strict_min=False, strict_max=False):
    """An argparse ``type`` converting to ``kind`` and checking the range."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        too_low = minimum is not None and (value <= minimum if strict_min else value < minimum)
        too_high = maximum is not None and (value >= maximum if strict_max else value > maximum)
        if too_low or too_high or value != value:
            limits = []
            if minimum is not None:
                limits.append(f"{'>' if strict_min else '>='} {minimum:g}")
            if maximum is not None:
                limits.append(f"{'<' if strict_max else '<='} {maximum:g}")
            allowed = " and ".join(limits)
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {allowed})")
        return value

    parse.__name__ = kind.__name__
    return parse


POSITIVE_INT = _number(int, 1)
NON_NEGATIVE_INT = _number(int, 0)
POSITIVE_FLOAT = _number(float, 0, strict_min=True)
FRACTION = _number(float, 0, 1, strict_max=True)


def THRESHOLD(text: str):  # an argparse type, named like FRACTION and the others
    """A score threshold in [0, 1), or ``auto`` (Otsu's split of each micrograph's scores)."""
    return "auto" if text.strip().lower() == "auto" else FRACTION(text)


NULL_CHECK_HELP = ("keep the picks of micrographs that look particle-free (their candidates score "
                   "no higher than on the micrograph's phase-randomised noise null); by default "
                   "no pick is kept on them")


def _subparser(sub, common, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, parents=[common], formatter_class=_Formatter, help=summary,
                          description=description)


def _add_simulate(sub, common) -> None:
    # core.synthetic re-exports SHAPES but imports scipy and pandas: keep --help fast.
    from napari_deeppicker.core._phantoms import SHAPES

    add = _subparser(sub, common, "simulate",
                     "write simulated micrographs with ground-truth coordinates",
                     "Write simulated micrographs (OUTDIR/micrographs/*.mrc), their exact particle "
                     "centres (OUTDIR/coords/*.star) and the simulation parameters "
                     "(OUTDIR/simulation.json).").add_argument
    add("outdir", metavar="OUTDIR", help="output folder (created if needed)")
    add("--n", type=NON_NEGATIVE_INT, default=4, help="number of micrographs")
    add("--size", type=POSITIVE_INT, default=1024, metavar="PX", help="image side in pixels")
    add("--seed", type=int, default=0, metavar="SEED", help="random seed of the whole dataset")
    add("--noise-only", action="store_true",
        help="micrographs without particles (same ice, CTF and noise; empty coordinates)")
    add("--shape", nargs="+", choices=SHAPES, metavar="NAME",
        help=f"particle shapes used in turn, from: {', '.join(SHAPES)} (default: all)")
    add("--box", type=POSITIVE_INT, default=64, metavar="PX",
        help="box size in pixels (the particle diameter is 0.85 box)")


def _add_train(sub, common) -> None:
    add = _subparser(sub, common, "train", "train a model on micrographs with particle coordinates",
                     "Train (or fine-tune with --init) the CNN. Give one "
                     "--micrographs/--coords/--box triple per dataset: several triples train a "
                     "cross-molecule model with an equal share of examples from each. "
                     "Micrographs without coordinates are skipped with a warning. Ctrl-C stops "
                     "and saves the best model so far.").add_argument
    add("--micrographs", action="append", required=True, metavar="DIR",
        help="folder of *.mrc micrographs (or a file or a quoted glob); repeat per dataset")
    add("--coords", action="append", required=True, metavar="DIR",
        help="folder of per-micrograph coordinates (STAR, BOX, CSV, Topaz; paired by stem, a "
             "_suffix such as _autopick allowed), or one multi-micrograph STAR file; repeat per "
             "dataset")
    add("--box", action="append", required=True, type=POSITIVE_INT, metavar="PX",
        help="particle box in micrograph pixels; once for all datasets or once per dataset")
    add("--out", required=True, metavar="MODEL", help="model file to write (.safetensors)")
    add("--init", metavar="MODEL",
        help="start from this model (a file or 'general') instead of random weights")
    add("--epochs", type=POSITIVE_INT, default=30, metavar="N", help="maximum number of epochs")
    add("--patience", type=POSITIVE_INT, default=5, metavar="N",
        help="stop after this many epochs without a better validation loss")
    add("--batch-size", type=POSITIVE_INT, default=128, metavar="N", help="examples per batch")
    add("--lr", type=POSITIVE_FLOAT, default=0.01, help="SGD learning rate")
    add("--seed", type=int, default=0, metavar="SEED",
        help="random seed (weights, sampling, split)")
    add("--invert", nargs="*", type=POSITIVE_INT, metavar="SET",
        help="particles are bright on the background: alone, in every dataset; with numbers, in "
             "those datasets (counted from 1 in --micrographs order)")
    add("--max-per-set", type=POSITIVE_INT, metavar="N",
        help="use at most N particles (and N background patches) per dataset")
    add("--device", default="auto", metavar="D", help=_DEVICE_HELP)


def _add_pick(sub, common) -> None:
    add = _subparser(sub, common, "pick", "pick particles in micrographs",
                     "Pick particles and write DIR/<micrograph stem>.star (columns "
                     "_rlnCoordinateX, _rlnCoordinateY, _rlnAutopickFigureOfMerit, by decreasing "
                     "score) and DIR/pick_summary.json. Each file is written atomically as soon "
                     "as its micrograph is done; Ctrl-C keeps them.").add_argument
    add("inputs", nargs="+", metavar="MRC_OR_DIR",
        help="micrograph files, folders of *.mrc files, quoted glob patterns, RELION STAR files "
             "with _rlnMicrographName (micrographs_ctf.star) or text files listing micrographs")
    add("--model", required=True, metavar="MODEL",
        help="model file, or 'general' for the model shipped with the package")
    add("--box", required=True, type=POSITIVE_INT, metavar="PX",
        help="particle box in micrograph pixels")
    add("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    add("--threshold", type=THRESHOLD, default=0.5, metavar="T",
        help="keep picks scoring above this (0-1), or 'auto': per micrograph, Otsu's split of "
             "its candidate scores (logit scale, at least 0.5); better than 0.5 for the general "
             "model on molecules it never saw")
    add("--top", type=POSITIVE_INT, metavar="N", help="keep at most N picks per micrograph")
    add("--format", choices=("star", "box", "csv"), default="star",
        help="coordinates format (BOX: EMAN2 corners with the box size)")
    add("--scores", action="store_true",
        help="also write the score maps, DIR/<stem>_scores.mrc, with DIR/<stem>_scores.json "
             "giving the micrograph position of the map grid (origin, spacing)")
    add("--step", type=int, choices=(4, 2, 1), default=4,
        help="score-map step in pixels of the box rescaled to 64 px (finer = slower)")
    add("--edge", type=_number(float, 0), default=0.5, metavar="FRACTION",
        help="picks keep this fraction of the box from the image border")
    add("--no-null-check", dest="null_check", action="store_false", help=NULL_CHECK_HELP)
    add("--polarity", choices=("dark", "bright", "auto"), default="dark",
        help="particles darker (raw cryo-EM) or brighter than the background; auto: estimated "
             "from the first micrographs (sign of the particle-scale skewness)")
    add("--invert", action="store_true", help="the same as --polarity bright")
    add("--self-train", type=NON_NEGATIVE_INT, default=0, metavar="ITERATIONS",
        help="first fine-tune the model on its own top picks in these micrographs, this many "
             "rounds (the paper's automatic iteration)")
    add("--self-train-top", type=POSITIVE_INT, metavar="N",
        help="positives per self-training round: the N best picks over all micrographs "
             "(default: the better half of the picks above --threshold)")
    add("--self-train-epochs", type=POSITIVE_INT, default=10, metavar="N",
        help="maximum epochs per self-training round")
    add("--save-model", metavar="FILE", help="save the self-trained model to FILE")
    add("--seed", type=int, default=0, metavar="SEED", help="random seed of self-training")
    add("--device", default="auto", metavar="D", help=_DEVICE_HELP)
    from napari_deeppicker._cli_batch import add_batch_arguments

    add_batch_arguments(add)


def _add_watch(sub, common) -> None:
    from napari_deeppicker._cli_batch import add_watch_arguments

    add_watch_arguments(_subparser(
        sub, common, "watch", "pick micrographs as they appear in a folder (live mode)",
        "Poll DIR and pick each new micrograph once it is completely written (its size stayed "
        "the same for --interval seconds and its MRC header is complete). Writes the same files "
        "as pick and updates the combined STAR files after each micrograph. A micrograph whose "
        "coordinates file exists is never picked again, across restarts. Stop with Ctrl-C, "
        "--timeout or --once.").add_argument)


def _add_relion(sub, common) -> None:
    from napari_deeppicker._cli_relion import add_relion_parser

    add_relion_parser(sub)


def _add_evaluate(sub, common) -> None:
    add = _subparser(sub, common, "evaluate", "compare picks with reference coordinates",
                     "Match picks to reference particles (centres closer than radius x box, one "
                     "to one) per micrograph, paired by stem, and print precision, recall, F1, "
                     "centre error, average precision and the best F1 with its score threshold. "
                     "Only micrographs present in both are evaluated.").add_argument
    add("--picks", required=True, metavar="DIR",
        help="folder of per-micrograph coordinates files, or one multi-micrograph file")
    add("--reference", required=True, metavar="DIR",
        help="folder of reference coordinates files, or one multi-micrograph file")
    add("--box", required=True, type=POSITIVE_INT, metavar="PX", help="box size in pixels")
    add("--radius", type=POSITIVE_FLOAT, default=0.2, metavar="FRACTION",
        help="match radius as a fraction of the box")
    add("--threshold", type=float, metavar="T", help="evaluate only the picks scoring at least T")
    add("--json", action="store_true",
        help="print the full report as JSON on stdout instead of the table")
    add("--plot", metavar="FILE.png",
        help="write precision/recall vs top picks and the precision-recall curve")


def _add_demo(sub, common) -> None:
    add = _subparser(sub, common, "demo",
                     "pick simulated micrographs of an unseen shape and show the result",
                     "Simulate micrographs of a particle shape the model was not trained on, pick "
                     "them with the general model (or, when it is not installed, a model trained "
                     "for about a minute on other shapes), evaluate against the truth and print "
                     "the figures. With a display, napari opens with the images, picks and the "
                     "plugin's docks.").add_argument
    add("--out", metavar="DIR", help="folder for the demo files (default: a new temporary folder)")
    add("--n", type=POSITIVE_INT, default=3, help="number of micrographs")
    add("--size", type=_number(int, 128), default=1024, metavar="PX", help="image side in pixels")
    add("--no-viewer", action="store_true", help="do not open napari")
    add("--train-seconds", type=POSITIVE_FLOAT, default=60.0, metavar="S",
        help="training time of the quick model used when the general model is not installed")
    add("--seed", type=int, default=0, metavar="SEED", help="random seed")
    add("--device", default="auto", metavar="D", help=_DEVICE_HELP)


def build_parser() -> argparse.ArgumentParser:
    """The ``deeppicker`` argument parser with its subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="show progress notes (-v) and debugging messages (-vv)")
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=_RawFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="show progress notes (-v) and debugging messages (-vv)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_simulate, _add_train, _add_pick, _add_evaluate, _add_demo, _add_watch,
                _add_relion):
        add(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``deeppicker`` command.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit code: 0 on success, 2 for bad input or usage (a message on stderr), 130 when
        interrupted with Ctrl-C.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: return instead of exiting
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    args.argv = argv
    module, function = COMMANDS[args.command].split(":")
    with cli_logging(args.verbose):
        try:
            return getattr(importlib.import_module(module), function)(args)
        except DeepPickerError as err:
            error(err)
            return EXIT_ERROR
        except KeyboardInterrupt:
            note("interrupted")
            return EXIT_INTERRUPTED
        except BrokenPipeError:
            _silence_stdout()
            return 1
        except OSError as err:
            error(err)
            return 1


def _silence_stdout() -> None:
    """After the reader of stdout went away (``| head``): no second error when Python flushes it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass


def relion_main(argv: Sequence[str] | None = None) -> int:
    """``deeppicker_relion``: ``deeppicker relion-external`` as the single program RELION runs.

    RELION's External job starts one executable with ``--o``, ``--in_mics`` and the job's
    parameters, so this entry point needs no wrapper script.
    """
    return main(["relion-external", *(sys.argv[1:] if argv is None else argv)])
