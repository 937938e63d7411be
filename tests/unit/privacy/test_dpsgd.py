"""Record-level DP-SGD at a participant: per-participant accountants that persist."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayfed.config import PrivacyConfig
from rayfed.fl import safe_format
from rayfed.fl.host import ParticipantHost
from rayfed.models import get_flat
from rayfed.plan import resolve
from rayfed.privacy.accounting import DpEvent, epsilon
from rayfed.privacy.dpsgd import poisson_batches
from rayfed.types import Failure, FitIns, FitRes
from tests.conftest import small_config


def _cfg(tmp_path, **privacy):
    base = dict(name="local_dp", noise_multiplier=1.1, clipping_norm=1.0, delta=1e-5)
    return small_config(tmp_path, privacy=PrivacyConfig(**{**base, **privacy}),
                        fl=dict(rounds=3, batch_size=16))


def _fit(host, weights, pid, server_round, state):
    [res] = host.fit(server_round, weights, [FitIns(pid, server_round, 7 * server_round, state)])
    return res


def test_poisson_batches_sample_each_example_independently():
    x = torch.arange(1000.0).unsqueeze(1)
    sizes = [len(xb) for xb, _ in poisson_batches(x, x[:, 0].long(), sample_rate=0.05,
                                                  steps=400, generator=torch.Generator())]
    assert np.mean(sizes) == pytest.approx(50, rel=0.05)
    assert np.std(sizes) == pytest.approx(np.sqrt(1000 * 0.05 * 0.95), rel=0.2)


def test_accountant_state_persists_across_rounds_and_hosts(tmp_path):
    cfg = _cfg(tmp_path)
    host = ParticipantHost(resolve(cfg))
    w = get_flat(host._model)
    r1 = _fit(host, w, 2, 1, None)
    assert isinstance(r1, FitRes)
    state = safe_format.loads(r1.state)["record_dp"]
    plan = state["plan"]
    ev = DpEvent(plan["sample_rate"], 1.1, plan["steps_per_round"])
    assert r1.metrics["epsilon"] == pytest.approx(epsilon([ev], delta=1e-5))
    # Round 2 on another host (a pooled actor that served others, or a restart).
    other = ParticipantHost(resolve(cfg))
    _fit(other, w, 0, 2, None)  # another participant in between
    r2 = _fit(other, w, 2, 2, r1.state)
    assert r2.metrics["epsilon"] == pytest.approx(epsilon([ev, ev], delta=1e-5))
    assert r2.metrics["epsilon"] > r1.metrics["epsilon"]
    assert not np.allclose(r1.delta, 0)


def test_participant_refuses_a_round_past_its_target(tmp_path):
    cfg = _cfg(tmp_path, target_epsilon=1.0, noise_multiplier=1.0)
    host = ParticipantHost(resolve(cfg))
    w = get_flat(host._model)
    res = _fit(host, w, 1, 1, None)
    assert isinstance(res, Failure) and "budget exhausted" in res.reason


def test_sigma_is_solved_for_the_planned_rounds(tmp_path):
    cfg = _cfg(tmp_path, target_epsilon=4.0, noise_multiplier=None)
    host = ParticipantHost(resolve(cfg))
    w = get_flat(host._model)
    state, eps = None, []
    for r in (1, 2, 3):
        res = _fit(host, w, 3, r, state)
        state = res.state
        eps.append(res.metrics["epsilon"])
    assert eps[0] < eps[1] < eps[2] <= 4.0
    assert eps[2] >= 3.9  # the planned rounds use (almost) all of the target


def test_fedprox_term_is_added_after_the_noise(tmp_path):
    cfg = _cfg(tmp_path)
    host = ParticipantHost(resolve(cfg))
    anchor = [p.detach().clone() for p in host._model.parameters()]
    opt = torch.optim.SGD(host._model.parameters(), lr=0.1)
    session = host._record_dp.begin(opt, num_examples=100, state=None, seed=0,
                                    participant_id=0, proximal_mu=0.5, anchor=anchor)
    with torch.no_grad():
        for p in host._model.parameters():
            p.add_(1.0)
            p.grad = torch.zeros_like(p)
    session.optimizer.step_hook(session.optimizer)
    for p in host._model.parameters():
        torch.testing.assert_close(p.grad, torch.full_like(p, 0.5))


def test_host_trains_private_participants_vectorised_as_opacus_would(tmp_path):
    """The pooled host's vectorised DP-SGD (torch.func) against the Opacus path:
    the same deltas, the same carried ledger, the same ε (issue #18)."""
    from dataclasses import replace

    cfg = _cfg(tmp_path, target_epsilon=8.0, noise_multiplier=None)
    fast = ParticipantHost(resolve(cfg))
    slow = ParticipantHost(resolve(replace(cfg, runtime=replace(cfg.runtime, vectorize=False))))
    assert fast._vectorize and not slow._vectorize
    w = get_flat(fast._model)
    tasks = [FitIns(pid, 1, 100 + pid) for pid in range(4)]
    a, b = fast.fit(1, w, tasks), slow.fit(1, w, tasks)
    for x, y in zip(a, b, strict=True):
        assert isinstance(x, FitRes) and isinstance(y, FitRes)
        np.testing.assert_allclose(x.delta, y.delta, atol=1e-6)
        assert x.metrics["epsilon"] == y.metrics["epsilon"]
        assert _events(x) == _events(y)


def _events(res: FitRes) -> list[dict]:
    """The carried ledger's events, less their random charge ids."""
    ledger = safe_format.loads(res.state)["record_dp"]["ledger"]
    return [{k: v for k, v in e.items() if k != "charge_id"} for e in ledger["events"]]


@pytest.mark.parametrize("step_on_empty", [True, False])
def test_an_empty_poisson_batch_still_adds_its_noise(step_on_empty):
    """The accountant counts every planned step, so an empty Poisson batch must still
    release noise (it once was skipped: a step charged but never noised)."""
    from opacus.grad_sample import wrap_model
    from opacus.optimizers import DPOptimizer

    from rayfed.train import train_epoch

    model = wrap_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3)),
                       grad_sample_mode="hooks")
    opt = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=1.0,
                      max_grad_norm=1.0, expected_batch_size=2,
                      generator=torch.Generator().manual_seed(1))
    before = get_flat(model._module)
    empty = [(torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long))]
    stats = train_epoch(model, empty, opt, step_on_empty=step_on_empty)
    moved = float(np.abs(get_flat(model._module) - before).max())
    if step_on_empty:
        # σC/expected_batch · lr = 0.05 per coordinate, on average.
        assert stats.steps == 1 and moved > 1e-3
    else:
        assert stats.steps == 0 and moved == 0.0
