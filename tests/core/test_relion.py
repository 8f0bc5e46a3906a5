"""The RELION External job wrapper (``deeppicker relion-external``) in a fake RELION project."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import starfile

from napari_deeppicker.cli import main, relion_main
from napari_deeppicker.core.io import (
    read_coordinates,
    read_coordinates_by_micrograph,
    read_micrograph,
)
from napari_deeppicker.core.model import load_model
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.relion import coordinates_path, pipeline_relative
from tests.core._batch_data import BOX, make_micrographs, make_model_file

JOB = "External/job010/"
IN_MICS = "CtfFind/job003/micrographs_ctf.star"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return make_model_file(tmp_path_factory.mktemp("relion_model"))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A RELION project: MotionCorr micrographs, a CtfFind micrographs STAR; cwd is the project."""
    movies = tmp_path / "MotionCorr" / "job002" / "Movies"
    paths = make_micrographs(movies, 2, prefix="frames")
    paths += make_micrographs(movies / "grid2", 1, prefix="frames.sq", seed=7)
    names = [p.relative_to(tmp_path).as_posix() for p in paths]
    star = tmp_path / IN_MICS
    star.parent.mkdir(parents=True)
    star.write_text(
        "\n# version 30001\n\ndata_optics\n\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
        "_rlnMicrographPixelSize #3\n_rlnVoltage #4\nopticsGroup1 1 2.0 300\n\n"
        "# version 30001\n\ndata_micrographs\n\nloop_\n_rlnMicrographName #1\n_rlnOpticsGroup #2\n"
        "_rlnDefocusU #3\n" + "".join(f"{n} 1 20000\n" for n in names))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def relion_args(model_file: Path, *extra: str) -> list[str]:
    return ["relion-external", "--o", JOB, "--in_mics", IN_MICS, "--model", str(model_file),
            "--box", str(BOX), "--threshold", "0", "--null-check", "no", "--device", "cpu", *extra, "--j", "4",
            "--pipeline_control", JOB]


def micrograph_names() -> list[str]:
    return starfile.read(IN_MICS, always_dict=True)["micrographs"]["rlnMicrographName"].tolist()


def relion31_coordinate_file(mic: str, coords_suffix_file: str) -> str:
    """What RELION 3.1's Extract opens: coord_dir + micrograph path after <Job>/jobNNN/ + suffix."""
    coord_dir, name = coords_suffix_file.rsplit("/", 1)
    suffix = name.replace("coords_suffix", "")
    post = PurePosixPath(*PurePosixPath(mic).parts[2:])
    return f"{coord_dir}/{post.parent.as_posix()}/{post.name.rsplit('.', 1)[0]}{suffix}"


def test_pipeline_paths_follow_relion():
    assert pipeline_relative("MotionCorr/job002/Movies/a.mrc") == PurePosixPath("Movies/a.mrc")
    assert pipeline_relative("Micrographs/a.mrc") == PurePosixPath("Micrographs/a.mrc")
    assert pipeline_relative("/data/session1/a.mrc") == PurePosixPath("a.mrc")
    assert coordinates_path(Path("External/job010"), "MotionCorr/job002/Movies/x/a.b.mrc") == \
        Path("External/job010/Movies/x/a.b_deeppicker.star")


def test_external_job_writes_what_extract_reads(project, model_file, capsys):
    code = main(relion_args(model_file, "--invert", "no", "--some_new_relion_flag", "7"))
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "ignoring arguments this job does not use: --some_new_relion_flag 7" in err
    job = project / JOB
    assert (job / "RELION_JOB_EXIT_SUCCESS").is_file()
    assert not (job / "RELION_JOB_EXIT_FAILURE").exists()
    names = micrograph_names()
    # RELION 4/5: autopick.star lists each micrograph with its coordinates file.
    listing = starfile.read(job / "autopick.star", always_dict=True)
    assert list(listing) == ["coordinate_files"]
    table = listing["coordinate_files"]
    assert table["rlnMicrographName"].tolist() == names
    relative = [pipeline_relative(n) for n in names]
    expected_files = [f"{JOB}{r.parent.as_posix()}/{r.name.rsplit('.', 1)[0]}_deeppicker.star"
                      for r in relative]
    assert table["rlnMicrographCoordinates"].tolist() == expected_files
    assert expected_files[2] == f"{JOB}Movies/grid2/frames.sq_000_deeppicker.star"
    # RELION 3.1: coords_suffix_deeppicker.star names the input STAR; the suffix rule finds them.
    suffix_file = f"{JOB}coords_suffix_deeppicker.star"
    assert (project / suffix_file).read_text().splitlines()[0] == IN_MICS
    assert [relion31_coordinate_file(n, suffix_file) for n in names] == expected_files
    model = load_model(model_file)
    for name, coords in zip(names, expected_files):
        picks, _ = pick_micrograph(model, read_micrograph(name).data, BOX, PickConfig(threshold=0, null_check=False))
        got = read_coordinates(coords)
        assert len(got) == len(picks) > 0
        np.testing.assert_array_equal(got[["x", "y", "score"]].to_numpy(),
                                      picks[["x", "y", "score"]].to_numpy())
    nodes = starfile.read(job / "RELION_OUTPUT_NODES.star", always_dict=True)["output_nodes"]
    assert nodes["rlnPipeLineNodeName"].tolist() == [f"{JOB}autopick.star"]
    assert nodes["rlnPipeLineNodeTypeLabel"].tolist() == ["MicrographsCoords.star.deeppicker"]
    # Every pick in one STAR (for cryoSPARC): keyed by micrograph.
    by_mic = read_coordinates_by_micrograph(job / "picks.star")
    assert sorted(by_mic) == sorted(PurePosixPath(n).stem for n in names)


def test_continue_picks_only_new_micrographs_and_relion31_nodes(project, model_file, capsys):
    assert main(relion_args(model_file)) == 0
    star = project / IN_MICS
    extra = make_micrographs(project / "MotionCorr" / "job002" / "Movies", 1, prefix="late", seed=9)
    star.write_text(star.read_text() + f"{extra[0].relative_to(project).as_posix()} 1 21000\n")
    capsys.readouterr()
    assert main(relion_args(model_file, "--relion3")) == 0
    _, err = capsys.readouterr()
    assert err.count("(skipped)") == 3 and err.count("(picked)") == 1
    table = starfile.read(project / JOB / "autopick.star")
    assert table["rlnMicrographName"].tolist() == micrograph_names()
    nodes = starfile.read(project / JOB / "RELION_OUTPUT_NODES.star",
                          always_dict=True)["output_nodes"]
    assert nodes["rlnPipeLineNodeName"].tolist() == [f"{JOB}coords_suffix_deeppicker.star"]
    assert nodes["rlnPipeLineNodeType"].tolist() == [2]


def test_failure_and_abort_markers(project, model_file, capsys):
    job = project / JOB
    code = main(relion_args(project / "missing.safetensors"))
    _, err = capsys.readouterr()
    assert code == 2 and "missing.safetensors" in err
    assert (job / "RELION_JOB_EXIT_FAILURE").is_file()
    assert not (job / "RELION_JOB_EXIT_SUCCESS").exists()
    (job / "RELION_JOB_ABORT_NOW").touch()  # the GUI's "abort" button
    assert main(relion_args(model_file)) == 130
    assert (job / "RELION_JOB_EXIT_ABORTED").is_file()
    assert not (job / "RELION_JOB_ABORT_NOW").exists()
    assert not (job / "RELION_JOB_EXIT_FAILURE").exists()
    # Stopped after the first micrograph.
    assert len(list((job / "Movies").rglob("*_deeppicker.star"))) == 1
    assert main(relion_args(model_file)) == 0  # "Continue" finishes the job
    assert (job / "RELION_JOB_EXIT_SUCCESS").is_file()
    assert not (job / "RELION_JOB_EXIT_ABORTED").exists()
    assert len(list((job / "Movies").rglob("*_deeppicker.star"))) == 3
    code = main(relion_args(model_file, "--invert", "maybe"))
    _, err = capsys.readouterr()
    assert code == 2 and "--invert expects yes or no" in err


def test_single_program_entry_point(project, model_file, capsys):
    """``deeppicker_relion`` (what RELION's External executable names) runs the same job."""
    assert relion_main(relion_args(model_file)[1:]) == 0
    assert (project / JOB / "RELION_JOB_EXIT_SUCCESS").is_file()
    assert (project / JOB / "autopick.star").is_file()
