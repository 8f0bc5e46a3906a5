"""Image formation for simulated micrographs: CTF, ice, carbon, contamination, dose, "denoising".

Conventions follow RELION: the defocus is positive for underfocus and the contrast transfer
function is ``-(sqrt(1 - A^2) sin(chi) + A cos(chi))``, negative at low frequency, so that protein
(a positive phase shift) comes out dark on a light background, as in real micrographs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft

# Phase shift per Angstrom of protein: interaction constant at 300 kV (0.00065 rad/(V A)) times
# the mean inner potential of protein over vitreous ice (about 2.8 V).
PHASE_PER_ANGSTROM = 0.0018
# Amorphous ice: per-pixel phase noise (rad) is this divided by the pixel size (A). It is what
# draws the Thon rings in a micrograph's power spectrum.
ICE_PHASE_NOISE = 0.08
_MAD_TO_SIGMA = 1.4826
# Above this many expected counts the Poisson law is drawn as a rounded normal one (the
# difference is far below anything a picker could notice, and it is several times faster).
_NORMAL_COUNTS = 100.0


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Angstrom."""
    volts = voltage_kv * 1e3
    return 12.2643 / np.sqrt(volts * (1.0 + 0.978466e-6 * volts))


def _frequency_squared(shape: tuple[int, int], pixel_size: float = 1.0) -> np.ndarray:
    """Squared spatial frequency (1 / unit^2) on the grid of ``rfft2`` of an image of ``shape``."""
    fy = sfft.fftfreq(shape[0], d=pixel_size)
    fx = sfft.rfftfreq(shape[1], d=pixel_size)
    return fy[:, None] ** 2 + fx[None, :] ** 2


def ctf_rfft(
    shape: tuple[int, int],
    pixel_size: float,
    defocus_um: float,
    *,
    voltage_kv: float = 300.0,
    cs_mm: float = 2.7,
    amplitude_contrast: float = 0.07,
    b_factor: float = 0.0,
) -> np.ndarray:
    """Contrast transfer function on the ``rfft2`` grid, with a B-factor envelope."""
    k2 = _frequency_squared(shape, pixel_size)
    wavelength = electron_wavelength(voltage_kv)
    chi = np.pi * wavelength * defocus_um * 1e4 * k2
    chi -= 0.5 * np.pi * cs_mm * 1e7 * wavelength**3 * k2**2
    envelope = np.exp(-0.25 * b_factor * k2)
    return -np.sin(chi + np.arcsin(amplitude_contrast)) * envelope


def smooth_field(shape: tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-variance random field varying over about ``scale`` pixels.

    A sum of Gaussians of width ``scale / 2`` on a coarse grid with random amplitudes: separable,
    so it costs two small matrix products instead of a large filter.
    """
    sigma = scale / 2.0

    def basis(n: int) -> np.ndarray:
        nodes = np.arange(-2 * sigma, n + 2 * sigma, sigma)
        return np.exp(-0.5 * ((np.arange(n)[:, None] - nodes[None, :]) / sigma) ** 2)

    by, bx = basis(shape[0]), basis(shape[1])
    field = by @ rng.normal(size=(by.shape[1], bx.shape[1])) @ bx.T
    return (field - field.mean()) / (field.std() + 1e-12)


@dataclass(frozen=True)
class Carbon:
    """A carbon support film covering the image beyond a wavy straight edge."""

    normal: tuple[float, float]  # unit vector (x, y) pointing into the carbon
    offset: float  # distance of the edge from the image centre, px
    waves: np.ndarray  # (m, 3): amplitude (px), frequency (1/px), phase of the edge's wobble
    centre: tuple[float, float]

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: tuple[int, int]) -> Carbon:
        """A random edge 0.12-0.35 image sides from the centre: most of the image stays free."""
        angle = rng.uniform(0, 2 * np.pi)
        side = min(shape)
        waves = np.column_stack(
            [
                rng.uniform(0.005, 0.03, 3) * side,
                rng.uniform(0.5, 4.0, 3) / side,
                rng.uniform(0, 2 * np.pi, 3),
            ]
        )
        centre = ((shape[1] - 1) / 2, (shape[0] - 1) / 2)
        offset = rng.uniform(0.12, 0.35) * side
        return cls((np.cos(angle), np.sin(angle)), offset, waves, centre)

    def _wobble(self, along: np.ndarray) -> np.ndarray:
        return sum(a * np.sin(2 * np.pi * f * along + p) for a, f, p in self.waves)

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance to the edge in px, positive on the carbon."""
        dx, dy = x - self.centre[0], y - self.centre[1]
        along = -dx * self.normal[1] + dy * self.normal[0]
        return dx * self.normal[0] + dy * self.normal[1] - self.offset + self._wobble(along)

    def film(self, shape: tuple[int, int]) -> np.ndarray:
        """Carbon coverage (0-1, soft over 2 px) of every pixel."""
        dx = np.arange(shape[1], dtype=np.float32)[None, :] - np.float32(self.centre[0])
        dy = np.arange(shape[0], dtype=np.float32)[:, None] - np.float32(self.centre[1])
        nx, ny = np.float32(self.normal[0]), np.float32(self.normal[1])
        along = dy * nx - dx * ny
        # The wobble only depends on the position along the edge: tabulate it at 1 px steps.
        table = np.arange(np.floor(along.min()), np.ceil(along.max()) + 2)
        wobble = np.interp(along, table, self._wobble(table))
        across = dx * nx + dy * ny - np.float32(self.offset) + wobble
        return np.clip(across / 2.0 + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class IceBlob:
    """An irregular crystalline-ice contamination, much larger than a particle."""

    centre: tuple[float, float]  # (x, y) px
    radius: float  # px
    harmonics: np.ndarray  # (m, 2): relative amplitude and phase of harmonics 2..m+1
    opacity: float  # absorption at the thickest point (transmission exp(-opacity))

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: tuple[int, int], diameter: float) -> IceBlob:
        """One blob of radius 1.5-4 particle diameters somewhere in the image."""
        centre = (rng.uniform(0, shape[1] - 1), rng.uniform(0, shape[0] - 1))
        harmonics = np.column_stack([rng.uniform(0.02, 0.12, 4), rng.uniform(0, 2 * np.pi, 4)])
        return cls(centre, rng.uniform(1.5, 4.0) * diameter, harmonics, rng.uniform(1.2, 2.2))

    def distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Approximate signed distance to the boundary in px, positive inside."""
        dx, dy = x - self.centre[0], y - self.centre[1]
        theta = np.arctan2(dy, dx)
        boundary = np.ones_like(theta)
        for m, (amplitude, phase) in enumerate(self.harmonics, start=2):
            boundary = boundary + amplitude * np.cos(m * theta + phase)
        return self.radius * boundary - np.hypot(dx, dy)

    def thickness(self, shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray]:
        """Relative thickness (0-1) on the blob's bounding box, and that box's slices."""
        reach = 1.5 * self.radius + 2
        r0, r1 = (max(0, int(self.centre[1] - reach)), min(shape[0], int(self.centre[1] + reach)))
        c0, c1 = (max(0, int(self.centre[0] - reach)), min(shape[1], int(self.centre[0] + reach)))
        rows, cols = np.mgrid[r0:r1, c0:c1].astype(float)
        inside = self.distance(cols, rows)
        edge = np.clip(inside / 3.0 + 0.5, 0.0, 1.0)
        dome = np.sqrt(np.clip(inside / self.radius, 0.0, 1.0))
        return (slice(r0, r1), slice(c0, c1)), edge * (0.6 + 0.4 * dome)


def add_obstacles(obstacles, phase, absorption, pixel_size, rng) -> None:
    """Add carbon and ice contamination to the phase and absorption maps, in place."""
    for obstacle in obstacles:
        if isinstance(obstacle, Carbon):
            film = obstacle.film(phase.shape)
            texture = rng.standard_normal(phase.shape, dtype=np.float32)
            phase += film * (0.3 + (2.5 * ICE_PHASE_NOISE / pixel_size) * texture)
            absorption += 0.15 * film
        else:
            window, thick = obstacle.thickness(phase.shape)
            phase[window] += 0.5 * thick
            absorption[window] += obstacle.opacity * thick


def shot_noise(expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Electron counts drawn from the expected counts per pixel (Poisson shot noise)."""
    counts = np.rint(expected + np.sqrt(expected) * rng.standard_normal(expected.shape))
    low = expected < _NORMAL_COUNTS
    counts[low] = rng.poisson(expected[low])
    return np.maximum(counts, 0.0)


def denoised_look(image: np.ndarray, diameter: float) -> np.ndarray:
    """Make a raw micrograph resemble a denoised, contrast-equalised 8-bit one.

    A strong band-pass (Gaussian low-pass of ``diameter / 12`` px, background removal over two
    diameters), a robust contrast stretch to median 128 and 8-bit steps (0-255 integers).
    """
    f2 = _frequency_squared(image.shape)
    low, high = max(1.0, diameter / 12.0), 2.0 * diameter
    band = np.exp(-2 * np.pi**2 * low**2 * f2) - np.exp(-2 * np.pi**2 * high**2 * f2)
    filtered = sfft.irfft2(sfft.rfft2(image - image.mean()) * band, s=image.shape)
    median = np.median(filtered)
    spread = _MAD_TO_SIGMA * np.median(np.abs(filtered - median)) + 1e-12
    return np.clip(np.rint(128.0 + 24.0 * (filtered - median) / spread), 0, 255)
