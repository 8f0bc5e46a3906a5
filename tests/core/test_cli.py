"""Tests of the ``deeppicker`` command line (cli.py, _cli_*.py), run in-process through main()."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import starfile

from napari_deeppicker import _cli_demo
from napari_deeppicker.cli import main
from napari_deeppicker.core.io import (
    read_coordinates,
    read_coordinates_by_micrograph,
    read_micrograph,
    write_coordinates,
)

BOX = 48
SIZE = 320
N_MICS = 3
RELION_COLUMNS = ["rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit"]


def run(capsys, *args) -> tuple[int, str, str]:
    """Run ``deeppicker ARGS`` in-process; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def sim(tmp_path_factory) -> Path:
    """A tiny simulated dataset made by ``deeppicker simulate``."""
    root = tmp_path_factory.mktemp("sim")
    code = main(["simulate", str(root), "--n", str(N_MICS), "--size", str(SIZE), "--box", str(BOX),
                 "--shape", "globular", "--seed", "3"])
    assert code == 0
    return root


@pytest.fixture(scope="session")
def model_file(sim, tmp_path_factory) -> Path:
    """A model trained for two epochs by ``deeppicker train``."""
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    code = main(["train", "--micrographs", str(sim / "micrographs"),
                 "--coords", str(sim / "coords"), "--box", str(BOX), "--out", str(path),
                 "--epochs", "2", "--device", "cpu"])
    assert code == 0
    return path


@pytest.fixture(scope="session")
def picks(sim, model_file, tmp_path_factory) -> Path:
    """Picks (threshold 0, with score maps) written by ``deeppicker pick``."""
    out = tmp_path_factory.mktemp("picks")
    code = main(["pick", str(sim / "micrographs"), "--model", str(model_file), "--box", str(BOX),
                 "--out", str(out), "--threshold", "0", "--scores", "--device", "cpu",
                 "--no-null-check"])  # a two-epoch model: judged on format, not on noise
    assert code == 0
    return out


def truth_counts(sim: Path) -> dict[str, int]:
    return {k: len(v) for k, v in read_coordinates_by_micrograph(sim / "coords").items()}


# --- help and interface ---------------------------------------------------------------------------


def test_module_help_runs_in_a_subprocess():
    result = subprocess.run([sys.executable, "-m", "napari_deeppicker", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("simulate", "train", "pick", "evaluate", "demo"):
        assert command in result.stdout
    assert result.stdout.startswith("usage: deeppicker")


@pytest.mark.parametrize(("command", "flags"), [
    ("simulate", ["OUTDIR", "--n", "--size", "--seed", "--noise-only", "--shape", "--box"]),
    ("train", ["--micrographs", "--coords", "--box", "--out", "--init", "--epochs", "--device",
               "--seed", "--batch-size", "--lr", "--patience", "--invert", "--max-per-set"]),
    ("pick", ["MRC_OR_DIR", "--model", "--box", "--out", "--threshold", "--top", "--self-train",
              "--device", "--scores", "--self-train-top", "--step", "--invert", "--format",
              "--edge", "--polarity", "--no-null-check"]),
    ("evaluate", ["--picks", "--reference", "--box", "--json", "--plot", "--radius",
                  "--threshold"]),
    ("demo", ["--out", "--n", "--no-viewer"]),
])
def test_every_documented_flag_is_in_the_help(capsys, command, flags):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    for flag in [*flags, "--verbose"]:
        assert flag in out, f"{flag} missing from `deeppicker {command} --help`"


def test_usage_errors_return_2(capsys):
    code, _, err = run(capsys, "pick", "x.mrc", "--box", "48")
    assert code == 2 and "--model" in err
    code, _, err = run(capsys, "pick", "x.mrc", "--model", "m", "--box", "48", "--out", "o",
                       "--step", "3")
    assert code == 2 and "--step" in err
    assert run(capsys, "frobnicate")[0] == 2


# --- simulate -------------------------------------------------------------------------------------


def test_simulate_writes_micrographs_and_ground_truth(sim, tmp_path, capsys):
    mics = sorted((sim / "micrographs").glob("*.mrc"))
    stars = sorted((sim / "coords").glob("*.star"))
    stems = [f"globular_{i:03d}" for i in range(N_MICS)]
    assert [p.stem for p in mics] == [p.stem for p in stars] == stems
    assert read_micrograph(mics[0]).data.shape == (SIZE, SIZE)
    recorded = json.loads((sim / "simulation.json").read_text())
    n_written = [len(read_coordinates(s)) for s in stars]
    assert [m["n_particles"] for m in recorded["micrographs"]] == n_written
    assert all(n > 0 for n in truth_counts(sim).values())
    code, _, err = run(capsys, "simulate", tmp_path, "--n", "1", "--size", "256", "--noise-only")
    assert code == 0 and "wrote 1 micrographs" in err
    assert len(read_coordinates(tmp_path / "coords" / "noise_000.star")) == 0


# --- train ----------------------------------------------------------------------------------------


def test_train_writes_a_loadable_model_naming_its_dataset(sim, model_file):
    from napari_deeppicker.core.model import load_model

    model = load_model(model_file)
    (dataset,) = model.metadata["datasets"]
    assert dataset["name"] == str(sim / "micrographs")
    assert Path(dataset["coords"]) == (sim / "coords").resolve()
    assert dataset["n_micrographs"] == N_MICS and dataset["box"] == BOX
    assert dataset["n_particles"] == sum(truth_counts(sim).values())
    assert model.metadata["training"]["epochs_run"] == 2
    assert model.metadata["training"]["sets"][0]["name"] == str(sim / "micrographs")
    assert model.metadata["command"].startswith("deeppicker train --micrographs")


def test_train_mixture_skips_micrographs_without_coordinates(sim, tmp_path, capsys):
    import pandas as pd

    coords = tmp_path / "coords"
    coords.mkdir()
    for name in ("globular_000", "globular_001"):  # globular_002 gets none; a picker suffix is fine
        truth = read_coordinates(sim / "coords" / f"{name}.star")
        write_coordinates(truth, coords / f"{name}_autopick.star")
    everything = tmp_path / "all_particles.star"  # set 1: one multi-micrograph STAR file
    tables = read_coordinates_by_micrograph(sim / "coords")
    write_coordinates(pd.concat([t.assign(micrograph=f"{k}.mrc") for k, t in tables.items()]),
                      everything)
    out = tmp_path / "mix.safetensors"
    code, _, err = run(capsys, "train", "--micrographs", sim / "micrographs",
                       "--coords", everything,
                       "--micrographs", sim / "micrographs", "--coords", coords, "--box", BOX,
                       "--invert", "2", "--out", out, "--epochs", "1", "--device", "cpu")
    assert code == 0, err
    assert "globular_002.mrc has no coordinates" in err and "using device cpu" in err
    from napari_deeppicker.core.model import load_model

    meta = load_model(out).metadata
    assert [d["n_micrographs"] for d in meta["datasets"]] == [3, 2]
    assert meta["datasets"][0]["n_particles"] == sum(truth_counts(sim).values())
    assert [d["invert"] for d in meta["datasets"]] == [False, True]
    assert meta["datasets"][1]["skipped"] == ["globular_002.mrc"]
    used = [s["positives_used"] for s in meta["training"]["sets"]]
    assert used[0] == used[1] > 0  # equal shares per dataset


def test_train_ctrl_c_saves_the_best_model_so_far(sim, tmp_path, capsys, monkeypatch):
    from napari_deeppicker import _cli_train
    from napari_deeppicker.core.model import load_model

    real_bar = _cli_train.progress_bar

    def interrupting_bar(**kwargs):
        bar = real_bar(**kwargs)

        def stop(*args, **kw):  # called when an epoch has finished
            raise KeyboardInterrupt
        bar.set_postfix = stop
        return bar

    monkeypatch.setattr(_cli_train, "progress_bar", interrupting_bar)
    out = tmp_path / "stopped.safetensors"
    code, _, err = run(capsys, "train", "--micrographs", sim / "micrographs",
                       "--coords", sim / "coords", "--box", BOX, "--out", out, "--epochs", "5",
                       "--device", "cpu")
    assert code == 130
    assert "interrupted" in err and str(out) in err
    assert load_model(out).metadata["training"]["epochs_run"] == 1


# --- pick -----------------------------------------------------------------------------------------


def test_pick_writes_sorted_relion_star_files_and_a_summary(sim, picks):
    summary = json.loads((picks / "pick_summary.json").read_text())
    assert summary["box"] == BOX and summary["threshold"] == 0 and summary["n_failed"] == 0
    assert set(summary["counts"]) == set(truth_counts(sim))
    for mic in sorted((sim / "micrographs").glob("*.mrc")):
        table = starfile.read(picks / f"{mic.stem}.star")
        assert list(table.columns) == RELION_COLUMNS
        scores = table["rlnAutopickFigureOfMerit"].to_numpy()
        assert len(scores) == summary["counts"][mic.stem] > 0
        assert np.all(np.diff(scores) <= 0) and np.all((scores > 0) & (scores <= 1))
        x, y = table["rlnCoordinateX"].to_numpy(), table["rlnCoordinateY"].to_numpy()
        for values in (x, y):
            assert np.all((values >= BOX / 2 - 1) & (values <= SIZE - BOX / 2))


def test_pick_score_maps_and_their_grid(sim, model_file, picks):
    from napari_deeppicker.core.model import load_model
    from napari_deeppicker.core.picking import PickConfig, score_micrograph

    model = load_model(model_file)
    mic = sim / "micrographs" / "globular_001.mrc"
    expected = score_micrograph(model, read_micrograph(mic).data, BOX, config=PickConfig())
    saved = read_micrograph(picks / "globular_001_scores.mrc").data
    grid = json.loads((picks / "globular_001_scores.json").read_text())
    np.testing.assert_allclose(saved, expected.data, atol=1e-6)
    assert grid["shape"] == list(saved.shape)
    np.testing.assert_allclose(grid["origin"], expected.origin)
    np.testing.assert_allclose(grid["spacing"], expected.spacing)
    assert grid["napari"] == {"scale": grid["spacing"], "translate": grid["origin"]}
    assert Path(grid["micrograph"]) == mic.resolve()


def test_pick_top_n_in_box_format(sim, model_file, tmp_path, capsys):
    code, _, err = run(capsys, "pick", sim / "micrographs" / "globular_000.mrc",
                       "--model", model_file, "--box", BOX, "--out", tmp_path, "--threshold", "0",
                       "--top", "4", "--format", "box", "--device", "cpu", "--no-null-check")
    assert code == 0, err
    df = read_coordinates(tmp_path / "globular_000.box")
    assert len(df) == 4 and df.attrs["box"] == BOX
    assert json.loads((tmp_path / "pick_summary.json").read_text())["counts"] == {"globular_000": 4}


def test_pick_ctrl_c_keeps_complete_files_only(sim, model_file, tmp_path, capsys, monkeypatch):
    import napari_deeppicker.core.picking as picking

    real, calls = picking.pick_micrograph, []

    def pick_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(picking, "pick_micrograph", pick_then_interrupt)
    code, _, err = run(capsys, "pick", sim / "micrographs", "--model", model_file, "--box", BOX,
                       "--out", tmp_path, "--threshold", "0", "--device", "cpu")
    assert code == 130 and "interrupted after 1 of 3" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["globular_000.star", "pick_summary.json"]
    summary = json.loads((tmp_path / "pick_summary.json").read_text())
    assert summary["interrupted"] is True and list(summary["counts"]) == ["globular_000"]


def test_pick_with_self_training(sim, model_file, tmp_path, capsys):
    from napari_deeppicker.core.model import load_model

    saved = tmp_path / "self.safetensors"
    out = tmp_path / "picks"
    code, _, err = run(capsys, "pick", sim / "micrographs", "--model", model_file, "--box", BOX,
                       "--out", out, "--threshold", "0.3", "--self-train", "1",
                       "--self-train-epochs", "1", "--save-model", saved, "--device", "cpu",
                       "--no-null-check")
    assert code == 0, err
    summary = json.loads((out / "pick_summary.json").read_text())
    assert summary["self_train"]["iterations"] == 1
    assert sorted(summary["counts"]) == sorted(truth_counts(sim))
    for stem, n in summary["counts"].items():
        assert len(read_coordinates(out / f"{stem}.star")) == n
    assert load_model(saved).metadata["self_training"]["iterations"] == 1


# --- evaluate -------------------------------------------------------------------------------------


def test_evaluate_truth_against_itself_is_perfect(sim, capsys):
    code, out, _ = run(capsys, "evaluate", "--picks", sim / "coords", "--reference", sim / "coords",
                       "--box", BOX, "--json")
    assert code == 0
    report = json.loads(out)  # nothing else on stdout
    total = sum(truth_counts(sim).values())
    summary = report["summary"]
    assert summary["precision"] == summary["recall"] == summary["f1"] == 1.0
    assert summary["n_picks"] == summary["n_reference"] == summary["tp"] == total
    assert summary["centre_error"] == 0.0
    assert [m["micrograph"] for m in report["per_micrograph"]] == sorted(truth_counts(sim))


def test_evaluate_table_plot_and_threshold_match_the_files(sim, picks, tmp_path, capsys):
    n_picks = {s: len(read_coordinates(picks / f"{s}.star")) for s in truth_counts(sim)}
    plot = tmp_path / "pr.png"
    code, out, err = run(capsys, "evaluate", "--picks", picks, "--reference", sim / "coords",
                         "--box", BOX, "--plot", plot)
    assert code == 0, err
    assert "ALL" in out and "average precision" in out
    assert all(stem in out for stem in n_picks)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, _ = run(capsys, "-v", "evaluate", "--picks", picks, "--reference", sim / "coords",
                       "--box", BOX, "--json", "--threshold", "0.2")
    assert code == 0
    summary = json.loads(out)["summary"]
    above = sum(int((read_coordinates(picks / f"{s}.star")["score"] >= 0.2).sum()) for s in n_picks)
    assert summary["n_picks"] == above <= sum(n_picks.values())
    assert summary["n_reference"] == sum(truth_counts(sim).values())
    assert summary["tp"] + summary["fp"] == above
    assert summary["tp"] + summary["fn"] == summary["n_reference"]


# --- errors ---------------------------------------------------------------------------------------


def assert_clean_error(code: int, err: str, name: str) -> None:
    assert code == 2
    assert "deeppicker: error:" in err and name in err
    assert "Traceback" not in err


def test_missing_micrograph(model_file, tmp_path, capsys):
    code, _, err = run(capsys, "pick", tmp_path / "absent.mrc", "--model", model_file, "--box", BOX,
                       "--out", tmp_path / "out")
    assert_clean_error(code, err, "absent.mrc")


def test_corrupt_micrograph(model_file, tmp_path, capsys):
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"not an MRC file" * 200)
    code, _, err = run(capsys, "pick", bad, "--model", model_file, "--box", BOX,
                       "--out", tmp_path / "out", "--device", "cpu")
    assert_clean_error(code, err, "broken.mrc")
    assert not (tmp_path / "out" / "broken.star").exists()


def test_box_larger_than_the_image(sim, model_file, tmp_path, capsys):
    mic = sim / "micrographs" / "globular_000.mrc"
    code, _, err = run(capsys, "pick", mic, "--model", model_file, "--box", SIZE + 1,
                       "--out", tmp_path, "--device", "cpu")
    assert_clean_error(code, err, "globular_000.mrc")
    assert "larger than the image" in err


def test_malformed_star(sim, tmp_path, capsys):
    bad = tmp_path / "coords"
    bad.mkdir()
    (bad / "globular_000.star").write_text("data_\n\nloop_\n_rlnCoordinateX #1\n12.5 7 oops\n")
    code, _, err = run(capsys, "evaluate", "--picks", bad, "--reference", sim / "coords",
                       "--box", BOX)
    assert_clean_error(code, err, "globular_000.star")
    code, _, err = run(capsys, "train", "--micrographs", sim / "micrographs", "--coords", bad,
                       "--box", BOX, "--out", tmp_path / "m.safetensors", "--device", "cpu")
    assert_clean_error(code, err, "globular_000.star")
    assert not (tmp_path / "m.safetensors").exists()


def test_missing_model_file(sim, tmp_path, capsys):
    code, _, err = run(capsys, "pick", sim / "micrographs",
                       "--model", tmp_path / "nope.safetensors", "--box", BOX, "--out", tmp_path,
                       "--device", "cpu")
    assert_clean_error(code, err, "nope.safetensors")


# --- demo -----------------------------------------------------------------------------------------


def test_demo_without_display(tmp_path, capsys, monkeypatch):
    shown = []
    monkeypatch.setattr(_cli_demo, "show_in_napari", lambda *args: shown.append(args))
    monkeypatch.setattr(_cli_demo, "display_available", lambda: False)
    monkeypatch.setattr(_cli_demo, "N_TRAIN_MICROGRAPHS", 4)
    code, out, err = run(capsys, "demo", "--out", tmp_path, "--n", "1", "--size", "256",
                         "--train-seconds", "0.5", "--device", "cpu")
    assert code == 0, err
    assert shown == [] and "not opening napari" in err
    (star,) = (tmp_path / "picks").glob("*.star")
    assert star.stem in out and "ALL" in out and "average precision" in out
    truth = read_coordinates(tmp_path / "data" / "coords" / f"{star.stem}.star")
    row = out.splitlines()[1].split()  # the micrograph's row of the table
    assert row[:3] == [star.stem, str(len(read_coordinates(star))), str(len(truth))]
    assert (tmp_path / "evaluation.png").is_file()
