"""Live mode (core.watch): files arriving while it runs, complete files only, no duplicates."""

from __future__ import annotations

from dataclasses import replace

import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from napari_deeppicker.cli import main
from napari_deeppicker.core.batch import SettingsMismatchError
from napari_deeppicker.core.io import read_coordinates, read_micrograph
from napari_deeppicker.core.model import load_model
from napari_deeppicker.core.picking import PickConfig, pick_micrograph
from napari_deeppicker.core.watch import FolderWatcher, file_complete
from tests.core._batch_data import BOX, make_micrographs, make_model_file, rows, star_loop

CONFIG = PickConfig(threshold=0.0, null_check=False)  # the model is untrained
N_MICS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("watch")
    make_micrographs(root / "source", N_MICS)
    make_model_file(root)
    return root


@pytest.fixture(scope="module")
def model(data):
    return load_model(data / "model_0.safetensors")


def write_slowly(sources: list[Path], folder: Path, chunks: int = 4, pause: float = 0.15) -> None:
    """Copy files into ``folder`` the way a detector does: in chunks, with pauses between."""
    for source in sources:
        payload = source.read_bytes()
        step = -(-len(payload) // chunks)
        with open(folder / source.name, "wb") as fh:
            for start in range(0, len(payload), step):
                fh.write(payload[start:start + step])
                fh.flush()
                time.sleep(pause)
        time.sleep(pause)


def combined_counts(out: Path) -> Counter:
    return Counter(row[0] for row in star_loop(out / "combined" / "autopick.star")[2])


def test_file_complete_needs_the_whole_data_block(data, tmp_path):
    source = data / "source" / "mic_000.mrc"
    payload = source.read_bytes()
    partial = tmp_path / "partial.mrc"
    for size in (0, 500, 1024, len(payload) - 1):
        partial.write_bytes(payload[:size])
        assert not file_complete(partial), size
    partial.write_bytes(payload)
    assert file_complete(partial)


def test_micrographs_arriving_while_watching_are_picked_once_and_complete(data, model, tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    sources = sorted((data / "source").glob("*.mrc"))
    shutil.copy(sources[0], incoming)  # one is there before the watch starts
    writer = threading.Thread(target=write_slowly, args=(sources[1:], incoming))
    watcher = FolderWatcher(model, incoming, BOX, out, pick_config=CONFIG, interval=0.1)
    writer.start()
    seen = []
    for progress in watcher.run(timeout=120, should_stop=lambda: len(seen) >= N_MICS):
        seen.append(progress)
    writer.join()
    assert sorted(p.item.path.name for p in seen) == [s.name for s in sources]
    assert {p.status for p in seen} == {"picked"}
    for source in sources:  # picked from the complete file, never from a partial one
        expected, _ = pick_micrograph(model, read_micrograph(source).data, BOX, CONFIG)
        got = read_coordinates(out / f"{source.stem}.star")
        np.testing.assert_array_equal(got[["x", "y", "score"]].to_numpy(),
                                      expected[["x", "y", "score"]].to_numpy())
    assert combined_counts(out) == Counter({str(incoming / s.name): 1 for s in sources})
    picks_rows = star_loop(out / "combined" / "picks.star")[2]
    assert len(picks_rows) == sum(len(rows(out / f"{s.stem}.star")) for s in sources)

    # Restart: nothing is picked again, the combined files keep one entry per micrograph.
    again = FolderWatcher(model, incoming, BOX, out, pick_config=CONFIG, interval=0.1)
    assert list(again.run(once=True)) == []
    assert again.counts == {"picked": 0, "failed": 0, "skipped": N_MICS}
    assert combined_counts(out) == Counter({str(incoming / s.name): 1 for s in sources})
    assert star_loop(out / "combined" / "picks.star")[2] == picks_rows


def test_restart_after_a_crash_before_the_combined_update(data, model, tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    sources = sorted((data / "source").glob("*.mrc"))[:2]
    for source in sources:
        shutil.copy(source, incoming)
    list(FolderWatcher(model, incoming, BOX, out, pick_config=CONFIG, interval=0.05).run(once=True))
    (out / "combined" / "autopick.star").unlink()  # as if killed between the two writes
    (out / "combined" / "picks.star").write_text("garbage")
    shutil.copy(sorted((data / "source").glob("*.mrc"))[2], incoming)
    progress = list(FolderWatcher(model, incoming, BOX, out, pick_config=CONFIG,
                                  interval=0.05).run(once=True))
    assert [p.item.path.name for p in progress] == ["mic_002.mrc"]
    names = sorted(str(p) for p in incoming.glob("*.mrc"))
    assert sorted(combined_counts(out).elements()) == names
    with pytest.raises(SettingsMismatchError):
        list(FolderWatcher(model, incoming, BOX, out, pick_config=replace(CONFIG, threshold=0.2),
                           interval=0.05).run(once=True))


def test_a_corrupt_file_is_reported_once_and_retried_when_it_changes(data, model, tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    incoming.mkdir()
    source = data / "source" / "mic_000.mrc"
    bad = incoming / "bad.mrc"
    payload = bytearray(source.read_bytes())
    payload[1024:] = b"\x00" * (len(payload) - 1024)  # complete but constant: unusable
    bad.write_bytes(bytes(payload))
    watcher = FolderWatcher(model, incoming, BOX, out, pick_config=CONFIG, interval=0.05)
    progress = list(watcher.run(timeout=1.0))
    assert [p.status for p in progress] == ["failed"] and "constant" in progress[0].error
    shutil.copy(source, bad)  # the file is replaced by a good one
    progress = list(FolderWatcher(model, incoming, BOX, out, pick_config=CONFIG,
                                  interval=0.05).run(once=True))
    assert [p.status for p in progress] == ["picked"]


def test_cli_watch_once_and_restart(data, tmp_path, capsys):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for source in sorted((data / "source").glob("*.mrc"))[:2]:
        shutil.copy(source, incoming)
    args = ["watch", str(incoming), "--model", str(data / "model_0.safetensors"), "--box", str(BOX),
            "--out", str(tmp_path / "out"), "--threshold", "0", "--no-null-check", "--interval", "0.1", "--once",
            "--device", "cpu"]
    assert main(args) == 0
    _, err = capsys.readouterr()
    assert "picked 2 new micrographs (0 done before, 0 failed)" in err
    assert "mic_000.mrc:" in err
    assert main(args) == 0
    _, err = capsys.readouterr()
    assert "picked 0 new micrographs (2 done before, 0 failed)" in err
    assert len(star_loop(tmp_path / "out" / "combined" / "autopick.star")[2]) == 2
