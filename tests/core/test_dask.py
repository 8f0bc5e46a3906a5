"""Batch picking on a Dask LocalCluster of worker processes: same outputs, no lost micrograph."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402

from napari_deeppicker.cli import main  # noqa: E402
from napari_deeppicker.core.batch import BatchPicker, resolve_inputs  # noqa: E402
from napari_deeppicker.core.distributed import DaskBatchPicker, connect  # noqa: E402
from napari_deeppicker.core.errors import DeepPickerError  # noqa: E402
from napari_deeppicker.core.model import load_model  # noqa: E402
from napari_deeppicker.core.picking import PickConfig  # noqa: E402
from tests.core._batch_data import (  # noqa: E402
    BOX,
    make_micrographs,
    make_model_file,
    rows,
    star_loop,
)

N_MICS = 6
CONFIG = PickConfig(threshold=0.0, null_check=False)  # the model is untrained
# The plugin below is defined here; workers cannot import this test module, so ship it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class KillFirstPick(WorkerPlugin):
    """Kill the worker process that starts the first picking task (once, via a marker file)."""

    name = "kill-first-pick"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("deeppicker-pick"):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(key).encode())
            os.close(fd)
            os._exit(1)  # the process dies mid-task, as on a node failure


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dask")
    make_micrographs(root / "mics", N_MICS, size=224)
    make_model_file(root)
    return root


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The in-process run, with one torch thread like each Dask worker."""
    import torch

    out = tmp_path_factory.mktemp("in_process")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thread counts change convolution rounding in the last bit
    try:
        picker = BatchPicker(load_model(data / "model_0.safetensors"),
                             resolve_inputs(data / "mics"), BOX, out, pick_config=CONFIG)
        list(picker.run())
    finally:
        torch.set_num_threads(threads)
    return out


def assert_same_outputs(ours: Path, reference: Path, data: Path) -> None:
    for mic in sorted((data / "mics").glob("*.mrc")):
        expected = rows(reference / f"{mic.stem}.star")
        assert len(expected) > 0
        assert rows(ours / f"{mic.stem}.star") == expected
    combined = star_loop(reference / "combined" / "picks.star")
    assert star_loop(ours / "combined" / "picks.star") == combined


def test_dask_run_equals_the_in_process_run(data, client, reference, tmp_path, capsys):
    base = ["pick", str(data / "mics"), "--model", str(data / "model_0.safetensors"),
            "--box", str(BOX), "--out", str(tmp_path), "--threshold", "0", "--device", "cpu",
            "--no-null-check",
            "--scheduler", client.scheduler.address]
    code = main(base)
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "2 Dask workers, 2 threads" in err
    assert_same_outputs(tmp_path, reference, data)
    # The client wrote everything: resuming on the cluster skips every micrograph.
    again = DaskBatchPicker(load_model(data / "model_0.safetensors"), resolve_inputs(data / "mics"),
                            BOX, tmp_path, pick_config=CONFIG, client=client)
    progress = list(again.run())
    assert [p.status for p in progress] == ["skipped"] * N_MICS and again.completed
    assert [p.done for p in progress] == list(range(1, N_MICS + 1))


def test_a_worker_killed_mid_run_loses_no_micrograph(data, client, reference, tmp_path):
    marker = tmp_path / "killed"
    client.register_plugin(KillFirstPick(str(marker)))
    try:
        picker = DaskBatchPicker(load_model(data / "model_0.safetensors"),
                                 resolve_inputs(data / "mics"), BOX, tmp_path / "out",
                                 pick_config=CONFIG, client=client, max_in_flight=3)
        progress = list(picker.run())
    finally:
        client.unregister_worker_plugin(KillFirstPick.name)
    assert marker.read_text().startswith("deeppicker-pick")  # a worker did die in a task
    expected = sorted(p.stem for p in (data / "mics").glob("*.mrc"))
    assert sorted(p.item.stem for p in progress) == expected
    assert {p.status for p in progress} == {"picked"} and picker.completed
    assert [p.done for p in progress] == list(range(1, N_MICS + 1))
    assert_same_outputs(tmp_path / "out", reference, data)


def test_scheduler_argument_errors():
    with pytest.raises(DeepPickerError, match="positive integer"):
        connect("local:zero")
    with pytest.raises(DeepPickerError, match="cannot connect"):
        connect("tcp://127.0.0.1:9", timeout="1s")
