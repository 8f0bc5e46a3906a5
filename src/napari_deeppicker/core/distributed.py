"""Batch picking on a Dask distributed cluster (``pip install napari-deeppicker[dask]``).

:class:`DaskBatchPicker` is a :class:`~napari_deeppicker.core.batch.BatchPicker` whose micrographs
are picked by Dask workers, one task per micrograph, while the client writes every output file
exactly as the in-process run does (same files, same values, same resume rules). The model goes
to the cluster once: its weights (numpy arrays) and preprocessing settings are the input of one
task, which every worker fetches once and turns into a network that it keeps for the following
tasks. As that input lives in the scheduler's task graph, a worker lost with it is simply
recomputed. A worker that dies while picking a micrograph has its task rescheduled by Dask on
another worker (``distributed.scheduler.allowed-failures`` times); failing tasks are retried
``retries`` times. Workers read the micrographs themselves: they need the same paths (a shared
file system), as on any cluster. Nothing here is imported by the default, in-process path.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from .batch import BatchPicker, PickResult, model_digest
from .errors import DeepPickerError

logger = logging.getLogger(__name__)

_MODELS: dict[str, object] = {}  # on each worker: digest/device -> PickerModel


def _import_distributed():
    try:
        import distributed
    except ImportError as err:
        raise DeepPickerError("running on a Dask cluster needs dask.distributed: "
                              "pip install 'napari-deeppicker[dask]'") from err
    return distributed


def connect(scheduler: str, timeout: str = "60s"):
    """Open a Dask client for ``--scheduler``.

    Parameters
    ----------
    scheduler : str
        ``local`` (a local cluster with one single-threaded worker process per CPU core),
        ``local:N`` (N worker processes), the path of a scheduler file (``*.json``, as written
        by ``dask scheduler --scheduler-file`` or dask-jobqueue), or a scheduler address
        (``tcp://host:8786``).
    timeout : str
        How long to try to reach a remote scheduler.

    Returns
    -------
    client : distributed.Client
        Connected client.
    cluster : distributed.LocalCluster or None
        The local cluster started here (close it after the client), or None.

    Raises
    ------
    DeepPickerError
        If dask.distributed is not installed, ``N`` is not a positive integer, or the
        scheduler cannot be reached.
    """
    distributed = _import_distributed()
    text = str(scheduler).strip()
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2]
        if count and not (count.isdigit() and int(count) > 0):
            raise DeepPickerError(f"--scheduler {text}: the number of workers must be a positive "
                                  "integer (local:4)")
        n_workers = int(count) if count else (os.cpu_count() or 1)
        cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None)
        return distributed.Client(cluster), cluster
    try:
        if text.endswith(".json") and Path(text).is_file():
            return distributed.Client(scheduler_file=text, timeout=timeout), None
        return distributed.Client(text, timeout=timeout), None
    except (OSError, TimeoutError, ValueError) as err:
        raise DeepPickerError(f"cannot connect to the Dask scheduler {text} ({err})") from err


@contextmanager
def dask_client(scheduler: str) -> Iterator:
    """Context manager around :func:`connect` that closes the client (and local cluster)."""
    client, cluster = connect(scheduler)
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def model_payload(model) -> dict:
    """What the workers need to rebuild the model: weights as numpy arrays, settings, digest."""
    state = {k: v.detach().to("cpu").numpy().copy() for k, v in model.net.state_dict().items()}
    return {"state": state, "preprocess": model.preprocess.to_dict(),
            "digest": model_digest(model), "metadata": {"path": model.metadata.get("path")}}


def _identity(value):
    return value


def worker_model(payload: dict, device: str = "auto"):
    """The model of ``payload`` on this worker, built once per worker process and cached."""
    import torch

    from .model import DeepPickerNet, PickerModel, select_device
    from .preprocess import PreprocessConfig

    key = f"{payload['digest']}/{device}"
    model = _MODELS.get(key)
    if model is None:
        net = DeepPickerNet()
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in payload["state"].items()}
        net.load_state_dict(state)
        net.eval()
        model = PickerModel(net, PreprocessConfig.from_dict(payload["preprocess"]),
                            dict(payload.get("metadata", {})))
        model.to(select_device(device))
        _MODELS.clear()  # one model at a time per worker
        _MODELS[key] = model
    return model


def pick_task(payload: dict, path: str, box: int, pick_config: dict, device: str,
              want_map: bool) -> dict:
    """Pick one micrograph on a worker; bad input comes back as ``{"error": message}``."""
    from . import picking
    from ._batch_compute import read_checked

    start = time.perf_counter()
    try:
        mic = read_checked(Path(path), box)
        picks, score_map = picking.pick_micrograph(worker_model(payload, device), mic.data, box,
                                                   picking.PickConfig(**pick_config))
    except DeepPickerError as err:
        return {"error": str(err), "seconds": time.perf_counter() - start}
    result = {name: picks[name].to_numpy() for name in ("x", "y", "score")}
    result.update(shape=tuple(mic.data.shape), pixel_size=mic.pixel_size,
                  seconds=time.perf_counter() - start)
    if want_map:
        result["map"] = (score_map.data, score_map.origin, score_map.spacing)
    return result


def _as_result(found: dict) -> PickResult:
    from .picking import ScoreMap

    picks = pd.DataFrame({name: found[name] for name in ("x", "y", "score")})
    score_map = ScoreMap(*found["map"]) if "map" in found else None
    return PickResult(picks, score_map, tuple(found["shape"]), found["pixel_size"])


class DaskBatchPicker(BatchPicker):
    """A :class:`BatchPicker` whose micrographs are picked by Dask workers.

    Parameters
    ----------
    *args, **kwargs
        As for :class:`BatchPicker` (``batch_size`` and ``read_ahead`` do not apply).
    client : distributed.Client
        A connected client (see :func:`connect`).
    worker_device : str
        Device name resolved on each worker (``auto``: its GPU if it has one).
    retries : int
        Extra attempts of a task that raised an unexpected error.
    max_in_flight : int, optional
        Tasks submitted at a time (default: twice the cluster's threads), so that memory stays
        bounded on the client and the scheduler whatever the number of micrographs.
    """

    def __init__(self, *args, client, worker_device: str = "auto", retries: int = 2,
                 max_in_flight: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.client, self.worker_device = client, str(worker_device)
        self.retries, self.max_in_flight = int(retries), max_in_flight

    def _compute(self, todo) -> Iterator[tuple[int, PickResult | None, Exception | None, float]]:
        distributed = _import_distributed()
        client = self.client
        if not todo:
            return
        run_id = uuid.uuid4().hex[:8]
        payload = model_payload(self.model)
        model_future = client.submit(_identity, payload, pure=False,
                                     key=f"deeppicker-model-{payload['digest'][:12]}-{run_id}")
        limit = self.max_in_flight or max(2, 2 * sum(client.nthreads().values()))
        config = self.pick_config.to_dict()
        want_map = self.on_picked is not None
        queue = iter(enumerate(todo))
        index: dict = {}
        finished = distributed.as_completed()

        def submit_next() -> None:
            for k, (item, _) in queue:
                future = client.submit(pick_task, model_future, str(item.path), self.box, config,
                                       self.worker_device, want_map, pure=False,
                                       retries=self.retries,
                                       key=f"deeppicker-pick-{k}-{item.stem}-{run_id}")
                index[future] = k
                finished.add(future)
                return

        try:
            for _ in range(limit):
                submit_next()
            for future in finished:
                k = index.pop(future)
                path = todo[k][0].path
                try:
                    found = future.result()
                except Exception as err:  # noqa: BLE001 - failed for good, e.g. KilledWorker
                    logger.warning("%s: the task failed on the cluster: %r", path, err)
                    yield k, None, DeepPickerError(f"{path}: failed on the cluster ({err!r})"), 0.0
                else:
                    if "error" in found:
                        yield k, None, DeepPickerError(found["error"]), found["seconds"]
                    else:
                        yield k, _as_result(found), None, found["seconds"]
                future.release()
                submit_next()
        finally:
            left = list(index)
            if left:
                client.cancel(left)
            model_future.release()
