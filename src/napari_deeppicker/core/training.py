"""Training the DeepPicker CNN: examples from coordinates, equal shares per molecule, SGD, early stop.

:class:`Trainer` is a generator-driven loop: ``for progress in trainer.run(): ...`` yields after
every batch, so a caller (CLI progress bar, napari ``thread_worker``) can show progress and stop
between batches by simply not iterating further; ``trainer.best_model`` then holds the best model
seen so far on the validation split.
"""

from __future__ import annotations

import copy
import datetime as _dt
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from napari_deeppicker.core.errors import TrainingDataError
from napari_deeppicker.core.preprocess import (
    PreprocessConfig,
    extract_patches,
    prepare_micrograph,
)

log = logging.getLogger(__name__)


@dataclass
class TrainingSet:
    """Labelled micrographs of one molecule.

    Parameters
    ----------
    micrographs : list of ndarray or path
        The micrographs (paths are read when the examples are extracted).
    coordinates : list of DataFrame
        Particle centres (columns x, y) per micrograph: the positives.
    box : float
        Particle box in micrograph pixels.
    hard_negatives : list of DataFrame, optional
        Positions known not to be particles (e.g. picks the user deleted), per micrograph.
    avoid : list of DataFrame, optional
        Positions random negatives must keep away from besides the positives (e.g. unlabelled
        candidates in self-training), per micrograph.
    invert : bool
        Particles are bright on the background in this set.
    name : str
        Shown in progress and stored in the model's training summary.
    """

    micrographs: Sequence
    coordinates: Sequence[pd.DataFrame]
    box: float
    hard_negatives: Sequence[pd.DataFrame] | None = None
    avoid: Sequence[pd.DataFrame] | None = None
    invert: bool = False
    name: str = ""


@dataclass
class TrainConfig:
    """Optimisation settings (the paper's defaults: SGD, lr 0.01, validation split 1/9)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    val_fraction: float = 1 / 9
    patience: int = 5
    seed: int = 0
    negative_distance: float = 0.6
    border: float = 0.5
    augment: bool = True
    max_per_set: int | None = None
    device: str | None = None


@dataclass
class TrainProgress:
    """One step of training, yielded by :meth:`Trainer.run`."""

    stage: str  # "extract" or "train"
    epoch: int = 0
    n_epochs: int = 0
    batch: int = 0
    n_batches: int = 0
    train_loss: float = float("nan")
    val_loss: float = float("nan")
    val_accuracy: float = float("nan")
    best_epoch: int = 0
    message: str = ""


def _as_image(item, name: str) -> np.ndarray:
    if isinstance(item, (str, Path)):
        from napari_deeppicker.core.io import read_micrograph

        return np.asarray(read_micrograph(item).data, dtype=np.float32)
    from napari_deeppicker.core.io import check_image

    return check_image(np.asarray(item, dtype=np.float32), name)


def _xy(df: pd.DataFrame | None) -> np.ndarray:
    if df is None or len(df) == 0:
        return np.empty((0, 2))
    return df[["y", "x"]].to_numpy(dtype=float)


def sample_negatives(shape, box, positives_rc, avoid_rc, n, config: TrainConfig, rng) -> np.ndarray:
    """Random (row, col) positions at least ``negative_distance * box`` from every positive.

    They also keep ``border * box`` from the image edge (some micrographs carry filter stripes
    there) and stay apart from ``avoid_rc``.
    """
    margin = max(config.border, 0.5) * box
    lo = np.array([margin, margin])
    hi = np.array([shape[0] - 1 - margin, shape[1] - 1 - margin])
    if np.any(hi <= lo) or n <= 0:
        return np.empty((0, 2))
    blockers = np.vstack([positives_rc, avoid_rc]) if len(avoid_rc) else positives_rc
    tree = cKDTree(blockers) if len(blockers) else None
    found = []
    for _ in range(20):
        cand = rng.uniform(lo, hi, size=(max(4 * n, 64), 2))
        if tree is not None:
            d, _ = tree.query(cand)
            cand = cand[d >= config.negative_distance * box]
        found.append(cand)
        if sum(len(c) for c in found) >= n:
            break
    return np.vstack(found)[:n]


def extract_set(tset: TrainingSet, preprocess: PreprocessConfig, config: TrainConfig, rng) -> Iterator:
    """Yield (positives, negatives) patch arrays micrograph by micrograph."""
    if len(tset.micrographs) != len(tset.coordinates):
        raise TrainingDataError(f"{tset.name or 'training set'}: {len(tset.micrographs)} micrographs "
                                f"but {len(tset.coordinates)} coordinate tables")
    prep = replace(preprocess, invert=preprocess.invert != tset.invert)
    for k, (mic, coords) in enumerate(zip(tset.micrographs, tset.coordinates)):
        image = _as_image(mic, f"{tset.name} micrograph {k}")
        prepared = prepare_micrograph(image, tset.box, prep)
        pos = _xy(coords)
        hard = _xy(tset.hard_negatives[k]) if tset.hard_negatives else np.empty((0, 2))
        avoid = _xy(tset.avoid[k]) if tset.avoid else np.empty((0, 2))
        margin = 0.5 * tset.box
        inside = np.all((pos >= margin) & (pos <= np.array(image.shape) - 1 - margin), axis=1)
        pos = pos[inside]
        neg = sample_negatives(image.shape, tset.box, pos, np.vstack([avoid, hard]),
                               max(len(pos) - len(hard), 0), config, rng)
        neg = np.vstack([hard, neg])

        def cut(rc):
            r, c = prepared.to_network(rc[:, 0], rc[:, 1])
            return extract_patches(prepared.data, r, c).astype(np.float32)

        yield cut(pos), cut(neg)


def _augment(x, generator):
    """Random element of the dihedral group D4 (90-degree rotations and flips) per patch."""
    import torch

    kinds = torch.randint(0, 8, (x.shape[0],), generator=generator, device="cpu").to(x.device)
    out = x.clone()
    for k in range(8):
        mask = kinds == k
        if bool(mask.any()):
            v = x[mask]
            if k & 4:
                v = v.flip(-1)
            out[mask] = torch.rot90(v, k & 3, (-2, -1))
    return out


class Trainer:
    """Train (or fine-tune) a model on one or several training sets (molecules, equal shares).

    Parameters
    ----------
    sets : list of TrainingSet
        One per molecule; each contributes the same number of examples.
    config : TrainConfig, optional
        Optimisation settings.
    init : PickerModel, optional
        Start from this model (fine-tuning); its preprocessing is kept.
    preprocess : PreprocessConfig, optional
        Preprocessing of a new model (ignored when ``init`` is given).
    """

    def __init__(self, sets, config: TrainConfig | None = None, init=None, preprocess=None):
        from napari_deeppicker.core.model import new_model, select_device

        if not sets:
            raise TrainingDataError("no training data given")
        self.sets = list(sets)
        self.config = config or TrainConfig()
        self.device = select_device(self.config.device)
        if init is not None:
            self.model = copy.deepcopy(init)
        else:
            self.model = new_model(self.config.seed)
            self.model.preprocess = preprocess or PreprocessConfig()
        self.model.to(self.device)
        self.best_state = None
        self.history: list[TrainProgress] = []
        self._summary: dict = {}

    @property
    def best_model(self):
        """The model with the lowest validation loss so far (the current one before any epoch)."""
        model = copy.deepcopy(self.model)
        if self.best_state is not None:
            model.net.load_state_dict(self.best_state)
        model.net.eval()
        model.metadata = dict(model.metadata, training=dict(self._summary, history=[
            {"epoch": h.epoch, "train_loss": h.train_loss, "val_loss": h.val_loss,
             "val_accuracy": h.val_accuracy} for h in self.history]))
        return model

    def _examples(self, rng) -> Iterator[TrainProgress | tuple]:
        per_set = []
        total = sum(len(s.micrographs) for s in self.sets)
        done = 0
        for tset in self.sets:
            pos, neg = [], []
            for p, n in extract_set(tset, self.model.preprocess, self.config, rng):
                pos.append(p)
                neg.append(n)
                done += 1
                yield TrainProgress("extract", batch=done, n_batches=total, message=tset.name)
            pos = np.concatenate(pos) if pos else np.empty((0, 64, 64), np.float32)
            neg = np.concatenate(neg) if neg else np.empty((0, 64, 64), np.float32)
            if len(pos) == 0:
                raise TrainingDataError(f"{tset.name or 'training set'}: no particle lies a half box "
                                        "or more inside its micrograph: nothing to train on")
            per_set.append((tset, pos, neg))
        share = min(len(p) for _, p, _ in per_set)
        if self.config.max_per_set:
            share = min(share, self.config.max_per_set)
        xs, ys, summary = [], [], []
        for tset, pos, neg in per_set:
            pi = rng.permutation(len(pos))[:share]
            ni = rng.permutation(len(neg))[:share]
            xs += [pos[pi], neg[ni]]
            ys += [np.ones(len(pi)), np.zeros(len(ni))]
            summary.append({"name": tset.name, "box": float(tset.box), "micrographs": len(tset.micrographs),
                            "particles_available": int(len(pos)), "positives_used": int(len(pi)),
                            "negatives_used": int(len(ni)), "invert": bool(tset.invert)})
        self._summary["sets"] = summary
        yield np.concatenate(xs), np.concatenate(ys)

    def run(self) -> Iterator[TrainProgress]:
        """Extract examples, then train; yields after every micrograph and every batch."""
        import torch
        import torch.nn.functional as F

        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        start = time.perf_counter()
        for item in self._examples(rng):
            if isinstance(item, TrainProgress):
                yield item
            else:
                x_all, y_all = item
        n = len(y_all)
        order = rng.permutation(n)
        n_val = max(1, int(round(n * cfg.val_fraction))) if n >= 10 else 0
        val_idx, tr_idx = order[:n_val], order[n_val:]
        x = torch.from_numpy(x_all[:, None]).to(self.device)
        y = torch.from_numpy(y_all.astype(np.int64)).to(self.device)
        net = self.model.net
        opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        n_batches = max(1, int(np.ceil(len(tr_idx) / cfg.batch_size)))
        best_loss, best_epoch, stale = float("inf"), 0, 0
        self._summary.update(n_train=int(len(tr_idx)), n_val=int(n_val), config=asdict(cfg),
                             device=str(self.device),
                             date=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            perm = torch.from_numpy(rng.permutation(tr_idx)).to(self.device)
            running = 0.0
            for b in range(n_batches):
                idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                xb = _augment(x[idx], gen) if cfg.augment else x[idx]
                loss = F.cross_entropy(net(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += loss.item()
                yield TrainProgress("train", epoch, cfg.epochs, b + 1, n_batches, running / (b + 1),
                                    best_epoch=best_epoch)
            val_loss, val_acc = self._validate(x, y, val_idx)
            improved = val_loss < best_loss - 1e-4 or n_val == 0
            if improved:
                best_loss, best_epoch, stale = val_loss, epoch, 0
                self.best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
            progress = TrainProgress("train", epoch, cfg.epochs, n_batches, n_batches, running / n_batches,
                                     val_loss, val_acc, best_epoch, "epoch done")
            self.history.append(progress)
            self._summary.update(best_epoch=best_epoch, best_val_loss=best_loss, epochs_run=epoch,
                                 best_val_accuracy=next(h.val_accuracy for h in self.history
                                                        if h.epoch == best_epoch),
                                 seconds=round(time.perf_counter() - start, 1))
            yield progress
            if stale >= cfg.patience:
                log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
                break

    def _validate(self, x, y, idx) -> tuple[float, float]:
        import torch
        import torch.nn.functional as F

        if len(idx) == 0:
            return float("nan"), float("nan")
        net = self.model.net
        net.eval()
        losses, correct = 0.0, 0
        with torch.inference_mode():
            for b in range(0, len(idx), 1024):
                sel = torch.from_numpy(idx[b:b + 1024]).to(x.device)
                logits = net(x[sel])
                losses += float(F.cross_entropy(logits, y[sel], reduction="sum"))
                correct += int((logits.argmax(1) == y[sel]).sum())
        return losses / len(idx), correct / len(idx)


def train_model(sets, config: TrainConfig | None = None, init=None, preprocess=None, progress=None):
    """Train to completion (convenience wrapper); ``progress(TrainProgress)`` called per step."""
    trainer = Trainer(sets, config, init, preprocess)
    for step in trainer.run():
        if progress is not None and progress(step) is False:
            break
    return trainer.best_model
