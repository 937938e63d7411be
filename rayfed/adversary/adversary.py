"""The shell that applies the configured attack to the malicious participants.

A :class:`~rayfed.fl.host.ParticipantHost` holds one :class:`Adversary`. Every
host derives the same malicious set from ``adversary.seed`` (or the explicit
``adversary.clients``), so pooled and dedicated placements attack identically.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
import torch

from rayfed.adversary.attacks import (
    alie,
    alie_z_max,
    boost,
    flip_labels,
    gaussian,
    malicious_ids,
    sign_flip,
)
from rayfed.adversary.config import AdversaryConfig
from rayfed.adversary.malformed import MALFORMED
from rayfed.data.federated import ClientData
from rayfed.types import FitRes

# Model replacement boosts an update trained toward a poisoned model.
_POISONS_LABELS = ("label_flip", "scaling")


class Adversary:
    def __init__(self, cfg: AdversaryConfig, *, num_clients: int, per_round: int,
                 num_classes: int) -> None:
        self.cfg = cfg
        self.ids = frozenset(cfg.clients) if cfg.clients else frozenset(
            malicious_ids(num_clients=num_clients, fraction=cfg.fraction, seed=cfg.seed))
        self._num_classes = num_classes
        self.z_max = cfg.z_max
        if cfg.name == "alie" and self.z_max is None:
            # Participants per round and, of them, the malicious ones (all of them
            # when every participant takes part, as in the paper's setting).
            m = min(len(self.ids), per_round - 1)
            self.z_max = alie_z_max(num_participants=per_round, num_malicious=m)
        self._alie_round: tuple[int, np.ndarray] | None = None

    def is_malicious(self, participant_id: int) -> bool:
        return ((self.cfg.name != "none" and participant_id in self.ids)
                or participant_id in self.cfg.malformed)

    def poison(self, data: ClientData) -> ClientData:
        """A malicious participant's training data (labels flipped where the attack
        poisons data); everyone else's unchanged."""
        if (data.participant_id not in self.ids or data.participant_id in self.cfg.malformed
                or self.cfg.name not in _POISONS_LABELS):
            return data
        y = flip_labels(data.y_train.numpy(), num_classes=self._num_classes)
        return replace(data, y_train=torch.from_numpy(y))

    def act(self, res: FitRes, *,
            colluders_honest: Callable[[Sequence[int]], list[np.ndarray]]) -> FitRes:
        """What a participant sends instead of its honest ``res``.

        ``colluders_honest(ids)``: the honest updates of the given malicious
        participants this round (ALIE's colluders estimate μ and σ from them).
        """
        pid, name, scale = res.participant_id, self.cfg.name, self.cfg.scale
        if pid in self.cfg.malformed:
            return MALFORMED[self.cfg.malformed[pid]](res)
        if not self.is_malicious(pid):
            return res
        if name in MALFORMED:
            return MALFORMED[name](res)
        delta = np.asarray(res.delta, dtype=np.float32)
        if name == "sign_flip":
            delta = sign_flip(delta, scale=scale)
        elif name == "scaling":
            delta = boost(delta, scale=scale)
        elif name == "gaussian":
            rng = np.random.default_rng([self.cfg.seed, res.server_round, pid])
            delta = gaussian(delta, scale=scale, rng=rng)
        elif name == "alie":
            if self._alie_round is None or self._alie_round[0] != res.server_round:
                honest = colluders_honest(sorted(self.ids))
                self._alie_round = (res.server_round,
                                    alie(honest, z_max=float(self.z_max or 0.0)))
            delta = self._alie_round[1]
        return replace(res, delta=delta)
