"""Batch picking (core.batch): inputs, read-ahead, resume, settings, combined files, CLI."""

from __future__ import annotations

from dataclasses import replace

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from napari_deeppicker.cli import main
from napari_deeppicker.core._read_ahead import ReadAhead
from napari_deeppicker.core.batch import (
    BatchConfig,
    BatchPicker,
    SettingsMismatchError,
    resolve_inputs,
)
from napari_deeppicker.core.errors import DeepPickerError, MicrographError
from napari_deeppicker.core.io import (
    read_coordinates,
    read_coordinates_by_micrograph,
    read_micrograph,
)
from napari_deeppicker.core.model import load_model
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from tests.core._batch_data import BOX, as_array, make_micrographs, make_model_file, rows, star_loop

N_MICS = 5
CONFIG = PickConfig(threshold=0.0, null_check=False)  # the model is untrained


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch")
    make_micrographs(root / "mics", N_MICS)
    make_model_file(root)
    return root


@pytest.fixture(scope="module")
def model(data):
    return load_model(data / "model_0.safetensors")


@pytest.fixture(scope="module")
def reference(data, model, tmp_path_factory) -> Path:
    """An uninterrupted run: the outputs every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    picker = BatchPicker(model, resolve_inputs(data / "mics"), BOX, out, pick_config=CONFIG)
    progress = list(picker.run())
    assert [p.status for p in progress] == ["picked"] * N_MICS and picker.completed
    return out


def stems(data) -> list[str]:
    return [p.stem for p in sorted((data / "mics").glob("*.mrc"))]


# --- inputs ---------------------------------------------------------------------------------------


def test_inputs_folder_glob_list_and_relion_star(data, tmp_path, monkeypatch):
    mics = sorted((data / "mics").glob("*.mrc"))
    assert [i.path for i in resolve_inputs(data / "mics")] == mics
    pattern = str(data / "mics" / "*_00[13].mrc")
    assert [i.path for i in resolve_inputs(pattern)] == [mics[1], mics[3]]
    listing = tmp_path / "list.txt"
    listing.write_text(f"# selected\n{mics[2]}\n\n../{tmp_path.name}/m.mrc\n")
    (tmp_path / "m.mrc").write_bytes(mics[0].read_bytes())
    items = resolve_inputs([listing, mics[2]])  # the duplicate is dropped
    assert [i.path for i in items] == [mics[2], tmp_path / f"../{tmp_path.name}/m.mrc"]
    # A RELION project: names relative to the project folder, found from another folder.
    project = tmp_path / "project"
    movies = project / "MotionCorr" / "job002" / "Movies"
    movies.mkdir(parents=True)
    for mic in mics[:2]:
        (movies / mic.name).write_bytes(mic.read_bytes())
    star = project / "CtfFind" / "job003" / "micrographs_ctf.star"
    star.parent.mkdir(parents=True)
    names = [f"MotionCorr/job002/Movies/{m.name}" for m in mics[:2]]
    star.write_text("data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnMicrographPixelSize #2\n"
                    "1 2.0\n\n"
                    "data_micrographs\n\nloop_\n_rlnMicrographName #1\n_rlnOpticsGroup #2\n"
                    + "".join(f"{n} 1\n" for n in names))
    monkeypatch.chdir(data)
    items = resolve_inputs(star)
    assert [i.name for i in items] == names
    assert [i.root for i in items] == [project, project]
    assert [i.path for i in items] == [project / n for n in names]
    (movies / mics[1].name).unlink()
    with pytest.raises(MicrographError, match="mic_001.mrc not found"):
        resolve_inputs(star)
    with pytest.raises(MicrographError, match="line 2: no such micrograph"):
        listing.write_text("\nabsent.mrc\n")
        resolve_inputs(listing)


# --- read-ahead -----------------------------------------------------------------------------------


def test_read_ahead_overlaps_reading_with_work_and_stays_bounded():
    started = {k: threading.Event() for k in range(6)}
    reader_threads, reads = set(), []

    def read(k):
        reader_threads.add(threading.current_thread().name)
        started[k].set()
        reads.append(k)
        if k == 3:
            raise MicrographError("item 3 is broken")
        return k * 10

    consumed = []
    with ReadAhead(range(6), read, depth=1) as reader:
        for k, value, err in reader:
            # While this item is "computed", the next one is being read in the other thread.
            if k < 5:
                assert started[k + 1].wait(5), "the reader did not read ahead"
            assert len(reads) <= len(consumed) + 3  # bounded: queue of 1 + one being read
            consumed.append((k, value, None if err is None else str(err)))
    assert consumed == [(0, 0, None), (1, 10, None), (2, 20, None), (3, None, "item 3 is broken"),
                        (4, 40, None), (5, 50, None)]
    assert reader_threads == {"deeppicker-read-ahead"}


def test_read_ahead_stops_when_the_consumer_stops():
    reads = []
    reader = ReadAhead(range(1000), lambda k: reads.append(k) or k, depth=1)
    with reader:
        for k, _, _ in reader:
            if k == 2:
                break
    assert not reader._thread.is_alive()
    assert len(reads) <= 5


# --- results, resume, settings --------------------------------------------------------------------


def test_batch_picks_equal_single_micrograph_picking(data, model, reference):
    for path in sorted((data / "mics").glob("*.mrc")):
        expected, _ = pick_micrograph(model, read_micrograph(path).data, BOX, CONFIG)
        got = read_coordinates(reference / f"{path.stem}.star")
        assert len(expected) > 0
        np.testing.assert_array_equal(got[["x", "y", "score"]].to_numpy(),
                                      expected[["x", "y", "score"]].to_numpy())
    manifest = json.loads((reference / "pick_summary.json").read_text())
    assert manifest["settings"]["box"] == BOX and manifest["settings"]["pick"]["threshold"] == 0.0
    assert len(manifest["settings"]["model_sha256"]) == 64


def test_combined_files_list_every_pick_and_file(data, reference):
    block, labels, table = star_loop(reference / "combined" / "picks.star")
    assert block == "particles"
    assert labels == ["_rlnMicrographName", "_rlnCoordinateX", "_rlnCoordinateY",
                      "_rlnAutopickFigureOfMerit"]
    mics = sorted((data / "mics").glob("*.mrc"))
    expected = [[str(m), *r.split()] for m in mics for r in rows(reference / f"{m.stem}.star")]
    assert table == expected
    by_mic = read_coordinates_by_micrograph(reference / "combined" / "picks.star")
    assert sorted(by_mic) == stems(data)
    block, labels, listing = star_loop(reference / "combined" / "autopick.star")
    assert block == "coordinate_files"
    assert labels == ["_rlnMicrographName", "_rlnMicrographCoordinates"]
    assert [row[0] for row in listing] == [str(m) for m in mics]
    assert [Path(row[1]) for row in listing] == [reference / f"{m.stem}.star" for m in mics]


def test_interrupted_run_resumes_and_matches_a_whole_run(data, model, reference, tmp_path):
    items = resolve_inputs(data / "mics")
    first = BatchPicker(model, items, BOX, tmp_path, pick_config=CONFIG)
    for progress in first.run():
        if progress.done == 2:
            break  # the consumer stops: as Ctrl-C or a killed job
    assert not first.completed
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mic_000.star", "mic_001.star", "pick_summary.json"]
    second = BatchPicker(model, items, BOX, tmp_path, pick_config=CONFIG)
    progress = list(second.run())
    assert [p.status for p in progress] == ["skipped"] * 2 + ["picked"] * 3
    assert second.completed and second.counts == {"picked": 3, "skipped": 2, "failed": 0}
    expected = [len(rows(reference / f"{s}.star")) for s in stems(data)]
    assert [p.n_picks for p in progress] == expected
    for stem in stems(data):
        assert rows(tmp_path / f"{stem}.star") == rows(reference / f"{stem}.star")
    for name in ("picks.star", "autopick.star"):
        ours = star_loop(tmp_path / "combined" / name)[2]
        theirs = star_loop(reference / "combined" / name)[2]
        if name == "autopick.star":
            ours = [[r[0], Path(r[1]).name] for r in ours]
            theirs = [[r[0], Path(r[1]).name] for r in theirs]
        assert ours == theirs


def test_other_settings_are_refused_unless_overwrite(data, model, reference, tmp_path):
    items = resolve_inputs(data / "mics")
    out = tmp_path / "out"
    list(BatchPicker(model, items[:2], BOX, out, pick_config=CONFIG).run())
    other = replace(CONFIG, threshold=0.3)
    with pytest.raises(SettingsMismatchError, match=r"pick\.threshold 0\.0 -> 0\.3"):
        list(BatchPicker(model, items, BOX, out, pick_config=other).run())
    assert not (out / "mic_002.star").exists()
    picker = BatchPicker(model, items, BOX, out, pick_config=other,
                         config=BatchConfig(overwrite=True))
    assert [p.status for p in picker.run()] == ["picked"] * N_MICS
    kept = as_array(rows(reference / "mic_000.star"))
    assert np.array_equal(as_array(rows(out / "mic_000.star")), kept[kept[:, 2] > 0.3])
    # Coordinates files without a manifest cannot be trusted either.
    (out / "pick_summary.json").unlink()
    with pytest.raises(SettingsMismatchError, match="no pick_summary.json"):
        list(BatchPicker(model, items, BOX, out, pick_config=other).run())


def test_batched_forward_passes_match_single_ones(data, model, reference, tmp_path):
    picker = BatchPicker(model, resolve_inputs(data / "mics"), BOX, tmp_path, pick_config=CONFIG,
                         config=BatchConfig(batch_size=3, combined=None))
    assert [p.status for p in picker.run()] == ["picked"] * N_MICS
    assert not (tmp_path / "combined").exists()
    for stem in stems(data):
        ours = as_array(rows(tmp_path / f"{stem}.star"))
        theirs = as_array(rows(reference / f"{stem}.star"))
        assert ours.shape == theirs.shape
        # Batched convolutions may round differently in the last bit of a score.
        np.testing.assert_allclose(ours[:, 2], theirs[:, 2], atol=1e-6)
        np.testing.assert_allclose(ours[:, :2], theirs[:, :2], atol=0.01)


def test_a_bad_micrograph_fails_alone_and_is_retried_next_time(data, model, tmp_path):
    mics = sorted((data / "mics").glob("*.mrc"))[:3]
    broken = tmp_path / "broken.mrc"
    broken.write_bytes(mics[0].read_bytes()[:3000])  # truncated
    items = resolve_inputs([mics[0], broken, mics[1]])
    out = tmp_path / "out"
    picker = BatchPicker(model, items, BOX, out, pick_config=CONFIG)
    progress = list(picker.run())
    assert [p.status for p in progress] == ["picked", "failed", "picked"]
    assert "broken.mrc" in progress[1].error and "truncated" in progress[1].error
    listed = [r[0] for r in star_loop(out / "combined" / "autopick.star")[2]]
    assert listed == [str(mics[0]), str(mics[1])]
    again = list(BatchPicker(model, items, BOX, out, pick_config=CONFIG).run())
    assert {p.item.path.name: p.status for p in again} == {
        mics[0].name: "skipped", "broken.mrc": "failed", mics[1].name: "skipped"}
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / mics[0].name).write_bytes(mics[0].read_bytes())
    with pytest.raises(DeepPickerError, match="would both be written"):
        BatchPicker(model, resolve_inputs([mics[0], twin / mics[0].name]), BOX, out)


def test_in_process_batch_never_imports_dask(data, tmp_path):
    code = ("import sys; from napari_deeppicker.core.batch import BatchPicker, resolve_inputs;"
            "from napari_deeppicker.core.model import load_model;"
            f"m = load_model({str(data / 'model_0.safetensors')!r});"
            f"items = resolve_inputs({str(data / 'mics')!r})[:1];"
            f"list(BatchPicker(m, items, {BOX}, {str(tmp_path)!r}).run());"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('dask', 'distributed')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "mic_000.star").is_file()


# --- the command line -----------------------------------------------------------------------------


def test_cli_pick_resumes_refuses_other_settings_and_overwrites(data, reference, tmp_path, capsys):
    model_file = data / "model_0.safetensors"
    listing = tmp_path / "mics.txt"
    listing.write_text("\n".join(str(p) for p in sorted((data / "mics").glob("*.mrc"))[:3]) + "\n")
    out = tmp_path / "picks"
    base = ["pick", listing, "--model", model_file, "--box", BOX, "--out", out,
            "--no-null-check", "--threshold", "0", "--device", "cpu"]
    assert main([str(a) for a in base]) == 0
    assert main([str(a) for a in base]) == 0
    _, err = capsys.readouterr()
    assert "3 micrographs were already picked (resumed)" in err
    summary = json.loads((out / "pick_summary.json").read_text())
    assert summary["counts"] == {s: len(rows(reference / f"{s}.star")) for s in stems(data)[:3]}
    assert all(r.get("skipped") for r in summary["micrographs"])
    assert summary["settings"]["pick"]["threshold"] == 0.0
    assert summary["combined"] == str(out / "combined" / "picks.star")
    code = main([str(a) for a in base[:-4]] + ["--threshold", "0.2", "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code == 2 and "other settings" in err and "threshold" in err
    custom = tmp_path / "all.star"
    code = main([str(a) for a in base[:-4]] + ["--threshold", "0.2", "--device", "cpu",
                                                "--overwrite", "--combined", str(custom)])
    assert code == 0
    by_mic = read_coordinates_by_micrograph(custom)
    assert sorted(by_mic) == stems(data)[:3]
    assert all((df["score"] > 0.2).all() for df in by_mic.values())
    assert (tmp_path / "autopick.star").is_file()
