"""Gaussian noise for DP and the generators it is drawn from.

The Gaussian mechanism adds N(0, σ²C²) per coordinate to a sum whose L2
sensitivity is C (Dwork & Roth 2014, §3.5; σ is the noise multiplier). With
distributed noise each of n participants adds N(0, σ²C²/n), and the sum of n
shares has the same N(0, σ²C²) (Kairouz et al. 2021, "The Distributed Discrete
Gaussian Mechanism", discuss the continuous case as the baseline).

Generators (``privacy.secure_rng``):

* ``secure=False``: a PCG64 stream from the experiment seed. Reproducible, and
  therefore predictable by anyone who knows the seed (the server derives the
  participants' seeds): for research only; a warning says so.
* ``secure=True``: numpy's Philox-4x64 counter-based generator keyed with 128
  bits from the operating system's CSPRNG (``secrets``/``os.urandom``), fresh for
  every generator. The key is unpredictable to the server and to other
  participants. It is not torchcsprng's AES-CTR: Philox is not a proven
  cryptographic PRG, and floating-point sampling is not hardened against the
  least-significant-bit attack of Mironov 2012. torchcsprng, which Opacus's
  ``secure_mode`` needs, has no build for torch 2.13.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported by the one function that draws with it
    import torch

log = logging.getLogger(__name__)


def noise_generator(*, secure: bool, seed: int | list[int] | None = None) -> np.random.Generator:
    """A numpy generator for DP noise (see the module docstring for the guarantee)."""
    if secure:
        return np.random.Generator(np.random.Philox(key=secrets.randbits(128)))
    return np.random.default_rng(seed)


def torch_noise_generator(*, secure: bool, seed: int,
                          device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator for Opacus's DP-SGD noise, seeded from the OS CSPRNG if secure.

    On the parameters' ``device``: Opacus draws the noise there with it."""
    import torch

    return torch.Generator(device=device).manual_seed(secrets.randbits(63) if secure else seed)


def warn_if_insecure(secure: bool, where: str) -> None:
    if not secure:
        log.warning("%s: privacy.secure_rng=false draws DP noise from a seeded, reproducible "
                    "generator; fine for research, not for production (set "
                    "privacy.secure_rng=true)", where)


def gaussian_noise(shape: tuple[int, ...], *, std: float,
                   rng: np.random.Generator) -> np.ndarray:
    """N(0, std²) per coordinate, in float64."""
    return rng.normal(0.0, std, size=shape)


def client_noise_std(*, noise_multiplier: float, clipping_norm: float,
                     expected_clients: float) -> float:
    """Per-participant share σC/√n, so that n shares sum to N(0, σ²C²)."""
    return noise_multiplier * clipping_norm / float(np.sqrt(expected_clients))
