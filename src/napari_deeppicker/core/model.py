"""The DeepPicker CNN, its exact fully convolutional form, model files and device selection.

Model files are safetensors: the weights plus a JSON metadata document stored in the safetensors
header. Loading parses JSON and raw tensors only; no pickle, so a model file cannot run code.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from napari_deeppicker import __version__
from napari_deeppicker.core._files import atomic_path
from napari_deeppicker.core.errors import ModelFileError
from napari_deeppicker.core.preprocess import TARGET_BOX, PreprocessConfig

log = logging.getLogger(__name__)

ARCHITECTURE = "deeppicker-cnn-v1"
FORMAT_VERSION = 1
CONV_KERNELS = (9, 5, 3, 2)
CONV_CHANNELS = (8, 16, 32, 64)
HIDDEN = 128
BUILTIN_MODELS = {"general": "general.safetensors"}


class DeepPickerNet(nn.Module):
    """The paper's classifier: 4 x (conv, ReLU, 2x2 max-pool), FC 256->128 + dropout 0.5, FC 128->2.

    ``forward`` classifies 64 x 64 patches; ``dense`` runs the same weights fully convolutionally
    over a whole image and returns, for every window position on a grid of step 4, 2 or 1, exactly
    the particle probability that ``forward`` gives for the patch cut out there.
    """

    def __init__(self) -> None:
        super().__init__()
        convs, c_in = [], 1
        for k, c_out in zip(CONV_KERNELS, CONV_CHANNELS):
            convs.append(nn.Conv2d(c_in, c_out, k))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        side = TARGET_BOX
        for k in CONV_KERNELS:
            side = (side - k + 1) // 2
        self.fc_side = side
        self.fc1 = nn.Linear(c_in * side * side, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, 2)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n, 2) for patches (n, 1, 64, 64); index 1 is "particle"."""
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)

    def dense(self, x: torch.Tensor, step: int = 4) -> torch.Tensor:
        """Particle probabilities of every window, computed fully convolutionally.

        Parameters
        ----------
        x : Tensor
            (n, 1, H, W) image(s), H, W >= 64.
        step : int
            Grid step in input pixels: 4 (the natural stride of two pooling layers), 2 or 1.
            A pooling layer that would exceed the step runs at stride 1 and later layers are
            dilated instead ("a trous"), so values stay identical to patch classification.

        Returns
        -------
        Tensor
            (n, (H - 64) // step + 1, (W - 64) // step + 1); value [i, j] is the probability for
            the patch ``x[..., step*i : step*i + 64, step*j : step*j + 64]``.
        """
        if step not in (1, 2, 4):
            raise ValueError(f"step must be 1, 2 or 4, got {step}")
        stride, dilation = 1, 1
        for conv in self.convs:
            x = F.relu(F.conv2d(x, conv.weight, conv.bias, dilation=dilation))
            if stride * 2 <= step:
                x = F.max_pool2d(x, 2, stride=2, dilation=dilation)
                stride *= 2
            else:
                x = F.max_pool2d(x, 2, stride=1, dilation=dilation)
                dilation *= 2
        c = CONV_CHANNELS[-1]
        w1 = self.fc1.weight.view(HIDDEN, c, self.fc_side, self.fc_side)
        x = F.relu(F.conv2d(x, w1, self.fc1.bias, dilation=dilation))
        logits = F.conv2d(x, self.fc2.weight[:, :, None, None], self.fc2.bias)
        return torch.sigmoid(logits[:, 1] - logits[:, 0])


def n_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters())


@dataclass
class PickerModel:
    """A trained network with everything needed to use it: preprocessing and provenance."""

    net: DeepPickerNet
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    metadata: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """Device holding the weights."""
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> PickerModel:
        """Move the weights to ``device`` (in place) and return self."""
        self.net.to(device)
        return self


def new_model(seed: int = 0) -> PickerModel:
    """A freshly initialised model (deterministic for a seed)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    net = DeepPickerNet()
    torch.random.set_rng_state(gen_state)
    return PickerModel(net=net, metadata={"architecture": ARCHITECTURE})


def select_device(name: str | None = None) -> torch.device:
    """Resolve a device name: ``None``/"auto" -> CUDA, else MPS, else CPU."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def builtin_model_path(name: str) -> Path:
    """Path of a model shipped inside the package (e.g. ``"general"``)."""
    ref = resources.files("napari_deeppicker") / "models" / BUILTIN_MODELS[name]
    return Path(str(ref))


def save_model(model: PickerModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as safetensors with JSON metadata, atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {k: v for k, v in model.metadata.items() if k != "path"}
    meta.update(
        architecture=ARCHITECTURE,
        format_version=FORMAT_VERSION,
        input_size=TARGET_BOX,
        preprocess=model.preprocess.to_dict(),
        software_version=meta.get("software_version", __version__),
        n_parameters=n_parameters(model.net),
    )
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"deeppicker": json.dumps(meta)})
    return path


def resolve_model_path(path_or_name: str | os.PathLike) -> Path:
    """A file path, or the path of a built-in model given by name."""
    if isinstance(path_or_name, str) and path_or_name in BUILTIN_MODELS:
        path = builtin_model_path(path_or_name)
        if not path.is_file():
            raise ModelFileError(f"the built-in model {path_or_name!r} is not installed ({path})")
        return path
    return Path(path_or_name)


def load_model(path_or_name: str | os.PathLike, device: str | torch.device | None = "cpu") -> PickerModel:
    """Load a model file (or a built-in model by name, e.g. ``"general"``) without unpickling.

    Raises
    ------
    ModelFileError
        When the file is missing, not a safetensors file, or not a DeepPicker model.
    """
    from safetensors import SafetensorError, safe_open

    path = resolve_model_path(path_or_name)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable model file ({exc})") from exc
    try:
        meta = json.loads(header["deeppicker"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: no DeepPicker metadata in the file") from exc
    if meta.get("architecture") != ARCHITECTURE:
        raise ModelFileError(f"{path}: unknown architecture {meta.get('architecture')!r}")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written by a newer napari-deeppicker; please upgrade")
    net = DeepPickerNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit the architecture ({exc})") from exc
    net.eval()
    model = PickerModel(net, PreprocessConfig.from_dict(meta.get("preprocess", {})), meta)
    model.metadata["path"] = str(path)
    if device is not None:
        model.to(select_device(str(device)) if not isinstance(device, torch.device) else device)
    return model
