"""The CNN, its exact dense form, model files and devices."""

import json

import numpy as np
import pytest
import torch

from napari_deeppicker.core.errors import ModelFileError
from napari_deeppicker.core.model import (
    DeepPickerNet,
    load_model,
    n_parameters,
    new_model,
    save_model,
    select_device,
)
from napari_deeppicker.core.picking import PickConfig, score_micrograph
from napari_deeppicker.core.preprocess import extract_patches, prepare_micrograph


def _perturbed_model(seed=0):
    """A model with non-trivial biases, so that every layer matters in the comparison."""
    model = new_model(seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.net.eval()
    return model


def test_architecture_is_the_papers():
    net = DeepPickerNet()
    assert [c.kernel_size[0] for c in net.convs] == [9, 5, 3, 2]
    assert [c.out_channels for c in net.convs] == [8, 16, 32, 64]
    assert net.fc1.in_features == 256 and net.fc1.out_features == 128 and net.fc2.out_features == 2
    assert 45_000 < n_parameters(net) < 55_000
    assert net(torch.zeros(3, 1, 64, 64)).shape == (3, 2)


@pytest.mark.parametrize("step", [4, 2, 1])
def test_dense_map_equals_patch_classifier(step, rng):
    """Every value of the score map equals the classifier on the window cut out at its position."""
    model = _perturbed_model(step)
    image = rng.normal(size=(300, 260)).astype(np.float32)
    image[100:140, 80:120] -= 2.0
    box = 70  # rescaling 70 -> 64 px: exercises the coordinate mapping too
    config = PickConfig(step=step)
    score_map = score_micrograph(model, image, box, config=config)
    prepared = prepare_micrograph(image, box, model.preprocess)
    h, w = score_map.data.shape
    ii = rng.integers(0, h, 40)
    jj = rng.integers(0, w, 40)
    rows, cols = score_map.positions(ii, jj)
    nr, nc = prepared.to_network(rows, cols)
    patches = extract_patches(prepared.data, nr, nc)
    with torch.no_grad():
        probs = torch.softmax(model.net(torch.from_numpy(patches[:, None])), 1)[:, 1].numpy()
    np.testing.assert_allclose(score_map.data[ii, jj], probs, atol=1e-4)
    assert np.ptp(probs) > 0.01  # the comparison is not between constants


def test_dense_map_covers_every_window_on_the_grid():
    model = new_model(0)
    image = np.random.default_rng(0).normal(size=(256, 200)).astype(np.float32)
    sm = score_micrograph(model, image, 64, config=PickConfig(step=4))
    assert sm.data.shape == ((256 - 64) // 4 + 1, (200 - 64) // 4 + 1)
    assert sm.origin == pytest.approx((31.5, 31.5))
    assert sm.spacing == pytest.approx((4.0, 4.0))


def test_save_load_round_trip(tmp_path):
    model = _perturbed_model(3)
    model.preprocess.invert = True
    model.metadata["training"] = {"sets": [{"name": "x", "box": 48.0}]}
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    for a, b in zip(model.net.state_dict().values(), loaded.net.state_dict().values()):
        assert torch.equal(a, b)
    assert loaded.preprocess.invert is True
    assert loaded.metadata["training"]["sets"][0]["name"] == "x"
    assert loaded.metadata["architecture"] == "deeppicker-cnn-v1"
    assert not list(tmp_path.glob("*.tmp"))


def test_pickle_files_are_refused_not_executed(tmp_path):
    """A torch.save pickle (which could run code) is rejected, never unpickled."""
    marker = tmp_path / "executed"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ModelFileError, match="evil.safetensors"):
        load_model(path)
    assert not marker.exists()


def test_bad_model_files(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError, match="junk"):
        load_model(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"deeppicker": json.dumps({"architecture": "x"})})
    with pytest.raises(ModelFileError, match="unknown architecture"):
        load_model(other)


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device(None).type in {"cpu", "cuda", "mps"}
    with pytest.raises(ValueError):
        select_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            select_device("cuda")
