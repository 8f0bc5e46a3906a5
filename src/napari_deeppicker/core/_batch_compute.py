"""Reading and scoring for batch picking: checked reads and several micrographs per pass.

Import these through :mod:`napari_deeppicker.core.batch`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import picking


def read_checked(path: Path, box: int):
    """Read a micrograph into memory and check that the box fits (errors name the file)."""
    from .io import read_micrograph
    from .preprocess import check_box

    mic = read_micrograph(path)
    check_box(box, mic.data.shape, str(path))
    if isinstance(mic.data, np.memmap):  # load it here, in the reader thread
        mic.data = np.array(mic.data)
    return mic


def pick_group(model, mics: list, box: int, config: picking.PickConfig, device):
    """Pick micrographs of one shape with a single forward pass per tile (GPU batching).

    With ``config.null_check`` the micrographs' nulls go through the same passes.
    """
    from .nullcheck import null_prepared
    from .preprocess import prepare_micrograph

    prepared = [prepare_micrograph(m.data, box, model.preprocess, keep_unclipped=True)
                for m in mics]
    nulls = [null_prepared(p, config.null_seed) for p in prepared] if config.null_check else []
    maps = _score_stack(model, prepared + nulls, config, device)
    found = []
    for k, (mic, prep) in enumerate(zip(mics, prepared)):
        null = (maps[len(mics) + k], nulls[k]) if nulls else None
        picks = picking.finish_picks(maps[k], prep, box, config, mic.data.shape, null)
        found.append((picks, maps[k]))
    return found


def _score_stack(model, prepared: list, config: picking.PickConfig, device) -> list:
    """Score maps of prepared images of one shape, all through each forward pass."""
    import torch

    from .preprocess import TARGET_BOX

    pad = picking._edge_pad(config)
    images = [np.pad(p.data, pad, mode="reflect") if pad else p.data for p in prepared]
    if min(images[0].shape) < TARGET_BOX:
        images = [np.pad(im, [(0, max(0, TARGET_BOX - n)) for n in im.shape], mode="reflect")
                  for im in images]
    stack = torch.from_numpy(np.ascontiguousarray(np.stack(images), dtype=np.float32))
    net, step = model.net, config.step
    device = device or model.device
    rows, cols = stack.shape[1:]
    out_h, out_w = (rows - TARGET_BOX) // step + 1, (cols - TARGET_BOX) // step + 1
    maps = np.empty((len(prepared), out_h, out_w), dtype=np.float32)
    tile_out = max(1, (picking._TILE[step] - TARGET_BOX) // step + 1)
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            net.to(device)
            for i0 in range(0, out_h, tile_out):
                i1 = min(out_h, i0 + tile_out)
                for j0 in range(0, out_w, tile_out):
                    j1 = min(out_w, j0 + tile_out)
                    tile = stack[:, step * i0: step * (i1 - 1) + TARGET_BOX,
                                 step * j0: step * (j1 - 1) + TARGET_BOX]
                    probs = net.dense(tile[:, None].to(device), step)
                    maps[:, i0:i1, j0:j1] = probs.float().cpu().numpy()
    finally:
        net.train(was_training)
    out = []
    for prep, data in zip(prepared, maps):
        sr, sc = prep.scale
        origin = ((picking._HALF - pad) / sr, (picking._HALF - pad) / sc)
        out.append(picking.ScoreMap(data, origin, (step / sr, step / sc)))
    return out
