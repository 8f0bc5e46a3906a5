"""Micrograph preprocessing: band-pass, rescaling so that the box becomes 64 px, robust normalisation.

Everything happens in one real FFT: the Gaussian low-pass of the paper, a very soft high-pass that
flattens uneven illumination and carbon gradients, and the resampling itself (Fourier cropping or
zero-padding), which is exact band-limited resampling and much faster than spatial interpolation
on large micrographs. Intensities are then normalised with the median and the MAD, which ice and
carbon barely move, and clipped so that a few very dark contaminations cannot dominate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import fft as sfft

from napari_deeppicker.core.errors import BoxSizeError

TARGET_BOX = 64
"""Side of the network's input patch: every box is rescaled to this many pixels."""

_MAD_TO_SIGMA = 1.4826


@dataclass
class PreprocessConfig:
    """How a micrograph is turned into the network's input.

    Parameters
    ----------
    lowpass_sigma : float
        Gaussian low-pass sigma in pixels of the rescaled image (box = 64 px).
    highpass_sigma : float
        Sigma of the Gaussian background removed before normalisation, in rescaled pixels
        (0 disables it). Large compared with a particle, so particles are untouched.
    clip_sigma : float
        Robust z-scores are clipped to +-clip_sigma.
    invert : bool
        Multiply by -1 after normalisation: set when particles are bright on the background
        (the network sees particles dark, as in raw cryo-EM micrographs).
    """

    lowpass_sigma: float = 1.0
    highpass_sigma: float = 96.0
    clip_sigma: float = 4.0
    invert: bool = False

    def to_dict(self) -> dict:
        """JSON-able representation (stored in model files)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessConfig:
        """Build from a dict, ignoring unknown keys (newer model files)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def box_scale(box: float) -> float:
    """Factor that maps micrograph pixels to network pixels (``64 / box``)."""
    if not np.isfinite(box) or box <= 0:
        raise BoxSizeError(f"box size must be a positive number of pixels, got {box!r}")
    return TARGET_BOX / float(box)


def check_box(box: float, shape: tuple[int, int], name: str = "micrograph") -> None:
    """Raise :class:`BoxSizeError` when ``box`` is not positive or does not fit in the image."""
    box_scale(box)
    if box > min(shape):
        raise BoxSizeError(
            f"{name}: box of {box:g} px is larger than the image ({shape[1]} x {shape[0]} px)"
        )


def rescaled_shape(shape: tuple[int, int], box: float) -> tuple[int, int]:
    """Shape of the rescaled image for a micrograph of ``shape`` and particle ``box``."""
    s = box_scale(box)
    return max(int(round(shape[0] * s)), 1), max(int(round(shape[1] * s)), 1)


def _gaussian_transfer(freq_sq: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-2.0 * np.pi**2 * sigma**2 * freq_sq)


def _resample_spectrum(spec: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Crop or zero-pad an ``rfft2`` spectrum (full rows, half columns) to ``out_shape``."""
    rows_in, cols_half_in = spec.shape
    rows_out, cols_out = out_shape
    cols_half_out = cols_out // 2 + 1
    out = np.zeros((rows_out, cols_half_out), dtype=spec.dtype)
    keep_r = min(rows_in, rows_out)
    pos = (keep_r + 1) // 2
    neg = keep_r - pos
    keep_c = min(cols_half_in, cols_half_out)
    out[:pos, :keep_c] = spec[:pos, :keep_c]
    if neg:
        out[-neg:, :keep_c] = spec[-neg:, :keep_c]
    return out


def bandpass_resample(
    image: np.ndarray, out_shape: tuple[int, int], lowpass_sigma: float, highpass_sigma: float
) -> np.ndarray:
    """Band-pass and resample ``image`` to ``out_shape`` in one FFT.

    Sigmas are in pixels of the output image. Sample ``k`` of the output lies at input position
    ``k * n_in / n_out`` along each axis (sample 0 on sample 0).
    """
    image = np.asarray(image, dtype=np.float32)
    rows_out, cols_out = out_shape
    spec = sfft.rfft2(image, workers=-1)
    spec = _resample_spectrum(spec, out_shape)
    fr = sfft.fftfreq(rows_out)[:, None]
    fc = sfft.rfftfreq(cols_out)[None, :]
    freq_sq = fr**2 + fc**2
    transfer = np.ones_like(freq_sq) if lowpass_sigma <= 0 else _gaussian_transfer(freq_sq, lowpass_sigma)
    if highpass_sigma > 0:
        transfer = transfer * (1.0 - _gaussian_transfer(freq_sq, highpass_sigma))
    else:
        transfer[0, 0] = 0.0
    spec *= transfer.astype(spec.real.dtype)
    out = sfft.irfft2(spec, s=out_shape, workers=-1)
    # Energy per sample changes with the number of samples; normalisation below removes it anyway.
    return out.astype(np.float32, copy=False)


def robust_normalise(image: np.ndarray, clip_sigma: float | None) -> np.ndarray:
    """Median / MAD z-scores, optionally clipped to +-clip_sigma (in place on a float32 copy)."""
    sample = image[:: max(1, image.shape[0] // 512), :: max(1, image.shape[1] // 512)]
    median = float(np.median(sample))
    mad = float(np.median(np.abs(sample - median))) * _MAD_TO_SIGMA
    if not np.isfinite(mad) or mad <= 0:
        mad = float(np.std(sample)) or 1.0
    out = (image - median) / mad
    if clip_sigma:
        np.clip(out, -clip_sigma, clip_sigma, out=out)
    return out.astype(np.float32, copy=False)


@dataclass
class PreparedImage:
    """A micrograph rescaled for the network.

    ``data[r, c]`` samples the micrograph at row ``r / scale[0]``, column ``c / scale[1]``.
    ``unclipped`` keeps the normalised values before clipping (for outlier counting).
    """

    data: np.ndarray
    scale: tuple[float, float]
    unclipped: np.ndarray | None = None

    def to_network(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Micrograph (row, col) -> rescaled-image (row, col)."""
        return np.asarray(rows) * self.scale[0], np.asarray(cols) * self.scale[1]

    def to_micrograph(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rescaled-image (row, col) -> micrograph (row, col)."""
        return np.asarray(rows) / self.scale[0], np.asarray(cols) / self.scale[1]


def prepare_micrograph(
    image: np.ndarray, box: float, config: PreprocessConfig | None = None, *, keep_unclipped=False
) -> PreparedImage:
    """Low-pass, rescale so that ``box`` px become 64 px, and normalise a micrograph.

    Parameters
    ----------
    image : ndarray
        2D micrograph (any real dtype).
    box : float
        Particle box in micrograph pixels.
    config : PreprocessConfig, optional
        Filtering and normalisation settings (the model's own, for picking).
    keep_unclipped : bool
        Also return the normalised image before clipping (for outlier counting).

    Returns
    -------
    PreparedImage
        The float32 network input and the exact per-axis scale.
    """
    config = config or PreprocessConfig()
    image = np.asarray(image)
    check_box(box, image.shape)
    out_shape = rescaled_shape(image.shape, box)
    filtered = bandpass_resample(image, out_shape, config.lowpass_sigma, config.highpass_sigma)
    unclipped = robust_normalise(filtered, None)
    data = np.clip(unclipped, -config.clip_sigma, config.clip_sigma)
    if config.invert:
        data = -data
        unclipped = -unclipped
    scale = (out_shape[0] / image.shape[0], out_shape[1] / image.shape[1])
    return PreparedImage(data.astype(np.float32), scale, unclipped if keep_unclipped else None)


def extract_patches(prepared: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Cut 64 x 64 patches centred on rescaled-image positions (reflect-padded at the border).

    A patch centred on ``(r, c)`` starts at ``round(r - 31.5)``, the convention of the dense
    score map (window ``i`` starts at ``step * i`` and is centred on ``step * i + 31.5``).
    """
    half = (TARGET_BOX - 1) / 2.0
    pad = TARGET_BOX
    padded = np.pad(prepared, pad, mode="reflect")
    r0 = np.rint(np.asarray(rows, dtype=float) - half).astype(int) + pad
    c0 = np.rint(np.asarray(cols, dtype=float) - half).astype(int) + pad
    r0 = np.clip(r0, 0, padded.shape[0] - TARGET_BOX)
    c0 = np.clip(c0, 0, padded.shape[1] - TARGET_BOX)
    offs = np.arange(TARGET_BOX)
    return padded[(r0[:, None, None] + offs[None, :, None]), (c0[:, None, None] + offs[None, None, :])]


def phase_randomise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image with the same amplitude spectrum and random phases: a particle-free null.

    Its texture and power spectrum (CTF, noise, particle density) match the micrograph, but no
    particle survives; windows cut from it are negatives that teach the network not to see
    particles in noise ("Einstein from noise").
    """
    image = np.asarray(image, dtype=np.float32)
    spec = sfft.rfft2(image - image.mean(), workers=-1)
    phases = np.exp(2j * np.pi * rng.random(spec.shape)).astype(np.complex64)
    out = sfft.irfft2(np.abs(spec) * phases, s=image.shape, workers=-1)
    return (out + image.mean()).astype(np.float32)
