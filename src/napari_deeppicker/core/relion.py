"""RELION integration: the file layout of an External picking job that RELION's Extract reads.

RELION (4.0, 5.0) runs an External job as ``EXE --o External/jobNNN/ --in_mics
CtfFind/jobMMM/micrographs_ctf.star --LABEL VALUE ... --j J`` from the project folder. A picker
run this way must (RELION documentation, "The External job-type", and RELION's AutoPick output):

- mirror the micrographs' folders inside the job folder and write one STAR file per micrograph,
  named after it with a ``_PICKNAME.star`` suffix: ``MotionCorr/job002/Movies/mic1.mrc`` ->
  ``External/jobNNN/Movies/mic1_deeppicker.star`` (RELION drops the first two path components,
  ``<JobType>/jobNNN/``, of pipeline paths);
- list them in ``autopick.star``: a ``data_coordinate_files`` loop with ``_rlnMicrographName``
  and ``_rlnMicrographCoordinates`` (RELION 4/5 Extract reads it with ``--coord_list``);
- for RELION 3.1, write ``coords_suffix_PICKNAME.star`` holding the name of the input
  micrographs STAR file (Extract then derives ``--coord_dir``/``--coord_suffix`` from it);
- declare its output node in ``RELION_OUTPUT_NODES.star`` (``data_output_nodes``), and finish by
  creating ``RELION_JOB_EXIT_SUCCESS`` (or ``RELION_JOB_EXIT_FAILURE``, or
  ``RELION_JOB_EXIT_ABORTED`` after the GUI asked to abort with ``RELION_JOB_ABORT_NOW``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ._files import atomic_write

logger = logging.getLogger(__name__)

PICK_NAME = "deeppicker"
SUCCESS = "RELION_JOB_EXIT_SUCCESS"
FAILURE = "RELION_JOB_EXIT_FAILURE"
ABORTED = "RELION_JOB_EXIT_ABORTED"
ABORT_NOW = "RELION_JOB_ABORT_NOW"
NODES_NAME = "RELION_OUTPUT_NODES.star"
COORDS_NODE_LABEL = "MicrographsCoords.star.deeppicker"  # RELION 4/5 node type label
COORDS_NODE_TYPE_31 = 2  # RELION 3.1 integer node type of coordinates (coords_suffix files)
_JOB_DIR = re.compile(r"^job\d+$")


def pipeline_relative(name: str) -> PurePosixPath:
    """The part of a micrograph name that RELION mirrors inside a picking job's folder.

    ``MotionCorr/job002/Movies/mic1.mrc`` -> ``Movies/mic1.mrc`` (the ``<JobType>/jobNNN/``
    prefix of pipeline paths is dropped); names outside a job folder keep their folders
    (``Micrographs/mic1.mrc``), absolute names keep only the file name.
    """
    path = PurePosixPath(str(name).replace("\\", "/"))
    if path.is_absolute():
        return PurePosixPath(path.name)
    parts = path.parts
    if len(parts) > 2 and _JOB_DIR.match(parts[1]):
        return PurePosixPath(*parts[2:])
    return PurePosixPath(*[p for p in parts if p not in (".", "..")])


def coordinates_path(outdir: Path, micrograph_name: str, pick_name: str = PICK_NAME) -> Path:
    """Where RELION expects the coordinates of a micrograph picked by a job writing to ``outdir``.

    The micrograph's extension (the last one, as RELION's ``withoutExtension``) is replaced by
    ``_<pick_name>.star``.
    """
    relative = pipeline_relative(micrograph_name)
    stem = relative.name.rsplit(".", 1)[0] if "." in relative.name else relative.name
    return Path(outdir) / Path(*relative.parent.parts) / f"{stem}_{pick_name}.star"


def relion_layout(outdir: Path, pick_name: str = PICK_NAME) -> Callable:
    """A :class:`~napari_deeppicker.core.batch.BatchPicker` layout writing RELION's file names."""
    outdir = Path(outdir)
    return lambda item: coordinates_path(outdir, item.name, pick_name)


def _write_star_loop(path: Path, block: str, labels: list[str], rows: list[list[str]]) -> None:
    lines = ["# version 30001", "", f"data_{block}", "", "loop_"]
    lines += [f"_{label} #{i}" for i, label in enumerate(labels, 1)]
    lines += [" ".join(str(v) for v in row) for row in rows]
    with atomic_write(path) as fh:
        fh.write("\n".join(lines) + "\n\n")


def write_job_files(outdir: Path, in_mics: str, list_path: Path, *, pick_name: str = PICK_NAME,
                    relion3: bool = False) -> None:
    """Write ``coords_suffix_<pick_name>.star`` and ``RELION_OUTPUT_NODES.star``.

    Parameters
    ----------
    outdir : pathlib.Path
        The job folder as RELION gave it (``External/jobNNN/``, relative to the project).
    in_mics : str
        The input micrographs STAR file as RELION gave it.
    list_path : pathlib.Path
        The ``autopick.star`` coordinate-file list (relative to the project folder).
    pick_name : str
        The suffix name of the per-micrograph files.
    relion3 : bool
        Declare the RELION 3.1 node (``coords_suffix`` file, integer node type) instead of the
        RELION 4/5 one (``autopick.star``, node type label).
    """
    outdir = Path(outdir)
    suffix_file = outdir / f"coords_suffix_{pick_name}.star"
    with atomic_write(suffix_file) as fh:
        fh.write(f"{in_mics}\n")
    if relion3:
        _write_star_loop(outdir / NODES_NAME, "output_nodes",
                         ["rlnPipeLineNodeName", "rlnPipeLineNodeType"],
                         [[suffix_file.as_posix(), COORDS_NODE_TYPE_31]])
    else:
        _write_star_loop(outdir / NODES_NAME, "output_nodes",
                         ["rlnPipeLineNodeName", "rlnPipeLineNodeTypeLabel"],
                         [[Path(list_path).as_posix(), COORDS_NODE_LABEL]])


def clear_exit_files(outdir: Path) -> None:
    """Remove the exit markers of an earlier run of the job (RELION's "Continue")."""
    for name in (SUCCESS, FAILURE, ABORTED):
        (Path(outdir) / name).unlink(missing_ok=True)


def mark_exit(outdir: Path, status: str) -> Path:
    """Create the (empty) exit marker ``SUCCESS``, ``FAILURE`` or ``ABORTED`` in ``outdir``."""
    path = Path(outdir) / status
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    if status == ABORTED:
        (Path(outdir) / ABORT_NOW).unlink(missing_ok=True)
    return path


def abort_requested(outdir: Path) -> bool:
    """Whether the RELION GUI asked the job to stop (``RELION_JOB_ABORT_NOW`` exists)."""
    return (Path(outdir) / ABORT_NOW).exists()
