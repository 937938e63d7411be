"""Byzantine attacks on federated updates, as pure functions.

Each attack turns what a malicious participant would honestly send into what it
sends instead. Randomness comes from a generator passed in; nothing here knows
about Ray, actors or the round loop (``rayfed.fl.host`` applies them).

- ``sign_flip``: send ``-scale · Δ`` (Damaskinos et al. 2018; Allen-Zhu et al. 2021
  use the same reversed-gradient attack). With ``scale = 1`` and 20 % attackers
  FedAvg only slows down; ``scale = 4`` cancels the 80 % honest mass
  (0.8 − 0.2 · 4 = 0) and is the setting of ``conf/adversary/sign_flip.yaml``.
- ``scaling``: model replacement (Bagdasaryan et al. 2020, "How To Backdoor
  Federated Learning"): train on poisoned (label-flipped) data and boost the update
  by ``γ = scale`` so that it survives averaging; the paper's ``γ = n / η`` is the
  number of participants per round over the server learning rate.
- ``label_flip``: train on labels ``y → C − 1 − y`` (Tolpegin et al. 2020,
  "Data Poisoning Attacks Against Federated Learning Systems"); the update is sent
  as computed.
- ``gaussian``: send ``N(0, scale²)`` in every coordinate instead of an update
  (the "Gaussian attack" of Blanchard et al. 2017 and Fang et al. 2020).
- ``alie``: "A Little Is Enough" (Baruch et al. 2019). The colluding attackers
  estimate the per-coordinate mean ``μ`` and standard deviation ``σ`` of honest
  updates from the honest updates of the participants they control and all send
  ``μ − z_max · σ``, with ``z_max`` from the paper:
  ``s = ⌊n/2 + 1⌋ − m``, ``z_max = Φ⁻¹((n − s) / n)``, for ``n`` participants per
  round of which ``m`` are malicious. The shift hides inside the spread of the
  honest updates, so median, trimmed mean and Krum keep picking it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

ATTACKS = ("none", "sign_flip", "scaling", "label_flip", "gaussian", "alie")


def sign_flip(delta: np.ndarray, *, scale: float) -> np.ndarray:
    """The reversed update, ``-scale · Δ``."""
    return (-scale * delta).astype(np.float32)


def boost(delta: np.ndarray, *, scale: float) -> np.ndarray:
    """Model replacement's boosted update ``γ · Δ`` (``γ = scale``)."""
    return (scale * delta).astype(np.float32)


def gaussian(delta: np.ndarray, *, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Pure noise of standard deviation ``scale`` in place of the update."""
    return rng.normal(0.0, scale, size=delta.shape).astype(np.float32)


def flip_labels(y: np.ndarray, *, num_classes: int) -> np.ndarray:
    """Label flipping: class ``c`` becomes ``C − 1 − c``."""
    return (num_classes - 1 - y).astype(y.dtype)


def alie_z_max(*, num_participants: int, num_malicious: int) -> float:
    """Baruch et al. 2019, Eq. (4): the largest shift that still hides among the
    honest updates for a majority-based rule.

    ``s = ⌊n/2 + 1⌋ − m`` honest participants must look farther from the mean than
    the attackers; ``z_max`` is the standard-normal quantile that leaves them there.
    """
    n, m = num_participants, num_malicious
    if not 0 < m < n:
        raise ValueError(f"ALIE needs 0 < malicious ({m}) < participants ({n})")
    s = math.floor(n / 2 + 1) - m
    return NormalDist().inv_cdf((n - s) / n)


def alie(honest: Sequence[np.ndarray], *, z_max: float) -> np.ndarray:
    """The colluders' common update ``μ − z_max · σ`` from honest updates they computed.

    ``σ`` is the population standard deviation per coordinate, as in the paper.
    With a single honest update to estimate from, ``σ = 0`` and the attack is that
    update itself (it cannot hide what it does not know).
    """
    if not honest:
        raise ValueError("ALIE needs at least one honest update to estimate mean and std")
    x = np.stack([np.asarray(h, dtype=np.float64) for h in honest])
    mu, sigma = x.mean(axis=0), x.std(axis=0)
    return (mu - z_max * sigma).astype(np.float32)


def malicious_ids(*, num_clients: int, fraction: float, seed: int) -> tuple[int, ...]:
    """The malicious participants: ``round(fraction · num_clients)`` ids drawn
    from ``seed`` alone, so every actor and the server agree without talking."""
    k = round(fraction * num_clients)
    rng = np.random.default_rng([seed, 0xBAD])
    return tuple(sorted(int(i) for i in rng.choice(num_clients, size=k, replace=False)))
