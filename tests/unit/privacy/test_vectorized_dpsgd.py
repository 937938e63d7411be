"""Vectorised DP-SGD against Opacus: the same clipped gradients, noise, rounds and ε."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from opacus.grad_sample import GradSampleModule, wrap_model
from opacus.optimizers import DPOptimizer

from rayfed.config import PrivacyConfig
from rayfed.data.federated import ClientData
from rayfed.fl import safe_format
from rayfed.fl.participant import LocalTraining, Participant
from rayfed.models import ModelSpec, build_model, get_flat
from rayfed.plan import resolve
from rayfed.privacy.dpsgd import RecordLevelDp, RecordLevelPlan, poisson_batches
from rayfed.privacy.noise import torch_noise_generator
from rayfed.privacy.vectorized_dpsgd import (
    clip_factors,
    clipped_sum,
    gaussian_noise,
    per_sample_grads,
    train_vectorized_dp,
    why_not_vectorizable_dp,
)
from rayfed.train.loop import Optimization
from rayfed.train.vectorized import train_vectorized
from rayfed.types import FitIns
from tests.conftest import small_config

SPECS = {
    "logreg": ModelSpec("logreg", (1, 8, 8), 10),
    "mlp": ModelSpec("mlp", (1, 8, 8), 10, (16,)),
    "cnn1d": ModelSpec("cnn1d", (1, 40), 10, ()),
}


@pytest.fixture(autouse=True)
def one_thread():
    """As a host runs (runtime.torch_threads=1): on a loaded 2-core machine two
    intra-op threads spin against each other and make tiny vmapped ops 20× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def shard(n: int, spec: ModelSpec, seed: int) -> ClientData:
    g = torch.Generator().manual_seed(seed)
    return ClientData(participant_id=seed, x_train=torch.randn(n, *spec.input_shape, generator=g),
                      y_train=torch.randint(0, 10, (n,), generator=g),
                      x_val=torch.zeros(0, *spec.input_shape), y_val=torch.zeros(0).long())


def stacked(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().unsqueeze(0) for n, p in model.named_parameters()}


def plan(*, sigma: float, clip: float, n: int, batch_size: int, epochs: int) -> RecordLevelPlan:
    q = min(1.0, batch_size / n)
    steps = epochs * max(1, int(np.ceil(1 / q - 1e-9)))
    return RecordLevelPlan(sigma, clip, 1e-5, q, steps, None, "rdp")


def opacus_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, sigma: float,
                clip: float, expected_batch_size: int,
                generator: torch.Generator | None = None) -> list[torch.nn.Parameter]:
    """Opacus's DP-SGD up to the optimizer step; p.grad_sample, p.summed_grad, p.grad."""
    gsm = GradSampleModule(model)
    dp = DPOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), noise_multiplier=sigma,
                     max_grad_norm=clip, expected_batch_size=expected_batch_size,
                     generator=generator)
    F.cross_entropy(gsm(x), y).backward()
    dp.pre_step()
    return list(model.parameters())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_clipped_per_sample_gradients_equal_opacus(name: str) -> None:
    spec = SPECS[name]
    data = shard(8, spec, seed=3)
    x, y = data.x_train, data.y_train
    model = build_model(spec, seed=0)
    grads, _ = per_sample_grads(model, stacked(model), x[None], y[None])
    norms = torch.cat([g[0].reshape(8, -1) for g in grads.values()], 1).norm(dim=1)
    clip = float(norms.median())  # half the examples are clipped, half are not
    factors = clip_factors(grads, torch.ones(1, 8), max_grad_norm=torch.tensor([clip]))
    assert (factors < 1).any() and (factors == 1).any()

    reference = opacus_step(copy.deepcopy(model), x, y, sigma=0.0, clip=clip,
                            expected_batch_size=8)
    for p, g in zip(reference, grads.values(), strict=True):
        torch.testing.assert_close(g[0], p.grad_sample, rtol=0, atol=1e-6)
    torch.testing.assert_close(clipped_sum(grads, factors)[0],
                               torch.cat([p.summed_grad.reshape(-1) for p in reference]),
                               rtol=0, atol=1e-6)
    # Each example clipped on its own: Opacus's summed gradient of a batch of one.
    for i in range(8):
        alone = opacus_step(copy.deepcopy(model), x[i : i + 1], y[i : i + 1], sigma=0.0,
                            clip=clip, expected_batch_size=1)
        for p, g in zip(alone, grads.values(), strict=True):
            torch.testing.assert_close(factors[0, i] * g[0, i], p.summed_grad.view_as(p),
                                       rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_noise_is_what_opacus_adds_from_the_same_generator(name: str) -> None:
    spec = SPECS[name]
    data = shard(6, spec, seed=4)
    model = build_model(spec, seed=0)
    sigma, clip, batch = 1.3, 0.7, 5
    reference = opacus_step(copy.deepcopy(model), data.x_train, data.y_train, sigma=sigma,
                            clip=clip, expected_batch_size=batch,
                            generator=torch.Generator().manual_seed(11))
    grads, _ = per_sample_grads(model, stacked(model), data.x_train[None], data.y_train[None])
    summed = clipped_sum(grads, clip_factors(grads, torch.ones(1, 6),
                                             max_grad_norm=torch.tensor([clip])))[0]
    noise = gaussian_noise([p.shape for p in model.parameters()], std=sigma * clip,
                           generator=torch.Generator().manual_seed(11))
    opacus_grad = torch.cat([p.grad.reshape(-1) for p in reference])
    torch.testing.assert_close((summed + noise) / batch, opacus_grad, rtol=0, atol=1e-6)
    assert noise.std().item() == pytest.approx(sigma * clip, rel=0.1)


def test_noise_std_is_sigma_c_over_expected_batch_per_participant() -> None:
    """One full-batch step (q = 1) with and without noise: the difference of the
    deltas is lr · noise / expected batch, per participant and coordinate."""
    spec = ModelSpec("mlp", (1, 8, 8), 10, (128,))
    sizes = [20, 32, 40, 50, 60, 64, 25, 48]
    shards = [shard(n, spec, seed=i) for i, n in enumerate(sizes)]
    xy = [(d.x_train, d.y_train) for d in shards]
    w0 = torch.from_numpy(get_flat(build_model(spec, seed=1)))
    opt = Optimization(epochs=1, batch_size=64, lr=0.5)
    sigma, clip = 1.7, 0.3
    seeds = list(range(len(sizes)))

    def run(s: float) -> list:
        plans = [plan(sigma=s, clip=clip, n=n, batch_size=64, epochs=1) for n in sizes]
        gens = [torch.Generator().manual_seed(1000 + i) for i in seeds]
        return train_vectorized_dp(build_model(spec), w0, xy, seeds, gens, plans, opt)

    noisy, clean = run(sigma), run(0.0)
    noise = torch.stack([(c.delta - r.delta) / opt.lr * n
                         for r, c, n in zip(noisy, clean, sizes, strict=True)])
    assert noise.numel() > 75_000
    assert noise.std().item() == pytest.approx(sigma * clip, rel=0.02)
    assert noise.mean().item() == pytest.approx(0.0, abs=0.01)
    # Independent across participants: each has its own generator.
    corr = torch.corrcoef(noise)
    assert (corr - torch.eye(len(sizes))).abs().max() < 0.05
    assert [r.steps for r in noisy] == [1] * len(sizes)


def test_noise_comes_from_the_callers_generators_only() -> None:
    spec = SPECS["mlp"]
    shards = [(d.x_train, d.y_train) for d in (shard(30, spec, 0), shard(20, spec, 1))]
    w0 = torch.from_numpy(get_flat(build_model(spec, seed=1)))
    opt = Optimization(epochs=1, batch_size=8, lr=0.1)
    plans = [plan(sigma=1.0, clip=1.0, n=len(x), batch_size=8, epochs=1) for x, _ in shards]

    def run(global_seed: int, noise_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        gens = [torch.Generator().manual_seed(noise_seed + i) for i in range(2)]
        res = train_vectorized_dp(build_model(spec), w0, shards, [5, 6], gens, plans, opt)
        return torch.stack([r.delta for r in res])

    assert torch.equal(run(0, 10), run(123, 10))
    assert not torch.allclose(run(0, 10), run(0, 20))


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_no_noise_and_no_clipping_is_plain_sgd(name: str) -> None:
    """σ = 0, C large and q = 1 (batch_size ≥ shard): every step is a full-batch
    SGD step, which the plain vectorised and sequential paths also take."""
    spec = SPECS[name]
    sizes = [3, 17, 8, 12]
    shards = [shard(n, spec, seed=i) for i, n in enumerate(sizes)]
    opt = LocalTraining(epochs=2, batch_size=32, lr=0.1, proximal_mu=0.5, weight_decay=0.01)
    w0 = get_flat(build_model(spec, seed=1))
    xy = [(d.x_train, d.y_train) for d in shards]
    plans = [plan(sigma=0.0, clip=1e6, n=n, batch_size=32, epochs=2) for n in sizes]
    gens = [torch.Generator().manual_seed(i) for i in range(len(sizes))]
    private = train_vectorized_dp(build_model(spec), torch.from_numpy(w0), xy, [0] * len(sizes),
                                  gens, plans, opt, max_group=3)
    plain = train_vectorized(build_model(spec), torch.from_numpy(w0), xy, [0] * len(sizes), opt)
    for d, a, b in zip(shards, private, plain, strict=True):
        sequential = Participant(d, build_model(spec), opt).fit(w0, FitIns(0, 1, 0, None))
        assert a.delta.abs().max() > 1e-3
        torch.testing.assert_close(a.delta, b.delta, rtol=0, atol=2e-6)
        np.testing.assert_allclose(a.delta.numpy(), sequential.delta, rtol=0, atol=2e-6)
        assert a.loss == pytest.approx(b.loss, rel=1e-5)
        assert a.examples_seen == 2 * a.num_examples


def _record_dp(tmp_path, spec_model: torch.nn.Module, **privacy) -> RecordLevelDp:
    base = dict(name="local_dp", noise_multiplier=1.1, clipping_norm=0.5, delta=1e-5)
    cfg = small_config(tmp_path, privacy=PrivacyConfig(**{**base, **privacy}),
                       fl=dict(batch_size=8, local_epochs=2, rounds=3))
    return RecordLevelDp(resolve(cfg).privacy.record, spec_model)


@pytest.mark.parametrize(("name", "privacy"), [
    ("mlp", {"noise_multiplier": None, "target_epsilon": 8.0}),  # σ solved per shard size
    ("cnn1d", {"noise_multiplier": 1.1}),
])
def test_private_round_and_epsilon_equal_the_opacus_path(tmp_path, name: str,
                                                         privacy: dict) -> None:
    """Same seeds: the same Poisson batches, clipping and noise as Participant.fit
    with Opacus, over three rounds with carried state; the same ledger and ε."""
    spec = SPECS[name]
    sizes = [30, 17, 12]
    shards = [shard(n, spec, seed=i) for i, n in enumerate(sizes)]
    opt = LocalTraining(epochs=2, batch_size=8, lr=0.1, proximal_mu=0.3, weight_decay=0.01)
    w0 = get_flat(build_model(spec, seed=1))
    model = build_model(spec, seed=0)
    arch = copy.deepcopy(model)  # before Opacus hooks the module it wraps
    rdp = _record_dp(tmp_path, model, **privacy)
    # The vectorised path's own host, with its own record of what was charged.
    rdp_vec = _record_dp(tmp_path, build_model(spec, seed=0), **privacy)
    seq_states: list = [None] * len(sizes)
    vec_states: list = [None] * len(sizes)
    for rnd in (1, 2, 3):
        seeds = [7 * rnd + i for i in range(len(sizes))]
        # The comparison is exact only where no Poisson batch is empty (see the module).
        for d, s, n in zip(shards, seeds, sizes, strict=True):
            batches = poisson_batches(d.x_train, d.y_train, sample_rate=8 / n,
                                      steps=2 * int(np.ceil(n / 8 - 1e-9)),
                                      generator=torch.Generator().manual_seed(s))
            assert all(len(xb) > 0 for xb, _ in batches)
        expected = [Participant(d, model, opt, record_dp=rdp).fit(
            w0, FitIns(d.participant_id, rnd, s, st))
            for d, s, st in zip(shards, seeds, seq_states, strict=True)]
        admitted = [rdp_vec.admit(num_examples=n, state=st, participant_id=i)
                    for i, (n, st) in enumerate(zip(sizes, vec_states, strict=True))]
        got = train_vectorized_dp(
            arch, torch.from_numpy(w0), [(d.x_train, d.y_train) for d in shards], seeds,
            [torch_noise_generator(secure=False, seed=s) for s in seeds],
            [p for p, _, _ in admitted], opt, max_group=2)
        for i, (e, g, (p, ledger, event)) in enumerate(zip(expected, got, admitted,
                                                           strict=True)):
            np.testing.assert_allclose(g.delta.numpy(), e.delta, rtol=0, atol=1e-6)
            assert g.loss == pytest.approx(e.metrics["train_loss"], rel=1e-6)
            assert (g.sample_rate, g.noise_multiplier, g.steps) == (
                event.sample_rate, event.noise_multiplier, event.steps)
            vec_states[i], metrics = rdp_vec.charge(i, p, ledger, event, server_round=rnd)
            seq_states[i] = e.state
            seq = safe_format.loads(e.state)["record_dp"]
            assert _without_ids(vec_states[i]) == _without_ids(seq)
            assert metrics["epsilon"] == e.metrics["epsilon"]
            assert {k: e.metrics[k] for k in metrics} == metrics
    if privacy.get("target_epsilon"):  # the 3 planned rounds spend (almost) all of it
        assert 7.5 < metrics["epsilon"] <= 8.0


def test_accounting_inputs_equal_record_level_dp_for_any_shard_size(tmp_path) -> None:
    spec = SPECS["logreg"]
    sizes = [1, 7, 8, 9, 16, 17, 100, 333]
    rdp = _record_dp(tmp_path, build_model(spec), noise_multiplier=0.9)
    plans = [rdp.plan(n) for n in sizes]
    gens = [torch.Generator().manual_seed(i) for i in range(len(sizes))]
    got = train_vectorized_dp(
        build_model(spec), torch.from_numpy(get_flat(build_model(spec))),
        [(d.x_train, d.y_train) for d in (shard(n, spec, i) for i, n in enumerate(sizes))],
        list(range(len(sizes))), gens, plans, Optimization(epochs=2, batch_size=8, lr=0.1))
    for n, p, r in zip(sizes, plans, got, strict=True):
        assert (r.sample_rate, r.steps, r.noise_multiplier) == (
            p.sample_rate, p.steps_per_round, p.noise_multiplier)
        assert r.sample_rate == min(1.0, 8 / n)
        assert r.num_examples == n


def test_an_empty_poisson_batch_still_takes_a_noisy_step() -> None:
    """Zero inputs give the logreg weight zero gradients, so its delta is exactly
    −lr/B · Σ noise over the steps: every step, empty batches included."""
    spec = SPECS["logreg"]
    n, batch, sigma, clip, lr, seed = 20, 1, 1.0, 1.0, 0.1, 3
    x, y = torch.zeros(n, 1, 8, 8), torch.arange(n) % 10
    p = plan(sigma=sigma, clip=clip, n=n, batch_size=batch, epochs=1)
    sampled = poisson_batches(x, y, sample_rate=p.sample_rate, steps=p.steps_per_round,
                              generator=torch.Generator().manual_seed(seed))
    assert sum(len(xb) == 0 for xb, _ in sampled) >= 3
    [res] = train_vectorized_dp(build_model(spec), torch.zeros(650), [(x, y)], [seed],
                                [torch.Generator().manual_seed(9)], [p],
                                Optimization(epochs=1, batch_size=batch, lr=lr))
    shapes = [torch.Size([10, 64]), torch.Size([10])]
    gen = torch.Generator().manual_seed(9)
    noise = sum(gaussian_noise(shapes, std=sigma * clip, generator=gen)
                for _ in range(p.steps_per_round))
    torch.testing.assert_close(res.delta[:640], -lr * noise[:640] / 1, rtol=0, atol=1e-6)


def test_models_the_vectorised_path_cannot_run_fall_back() -> None:
    mlp = build_model(SPECS["mlp"], seed=0)
    sgd = Optimization(1, 8, 0.1)
    assert why_not_vectorizable_dp(sgd, mlp) is None
    assert "momentum" in str(why_not_vectorizable_dp(Optimization(1, 8, 0.1, momentum=0.9), mlp))
    assert "dropout" in str(why_not_vectorizable_dp(
        sgd, torch.nn.Sequential(mlp, torch.nn.Dropout(0.5))))
    assert "buffers" in str(why_not_vectorizable_dp(
        sgd, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(64))))
    frozen = copy.deepcopy(mlp)
    next(frozen.parameters()).requires_grad_(False)
    assert "frozen" in str(why_not_vectorizable_dp(sgd, frozen))
    hooked = copy.deepcopy(mlp)
    wrap_model(hooked, grad_sample_mode="hooks")
    assert "hooks" in str(why_not_vectorizable_dp(sgd, hooked))
    with pytest.raises(ValueError, match="does not apply"):
        train_vectorized_dp(hooked, torch.zeros(1), [], [], [], [], sgd)


def test_a_plan_for_other_local_epochs_is_refused() -> None:
    spec = SPECS["logreg"]
    d = shard(16, spec, 0)
    stale = plan(sigma=1.0, clip=1.0, n=16, batch_size=8, epochs=1)
    with pytest.raises(ValueError, match=r"fl\.local_epochs"):
        train_vectorized_dp(build_model(spec), torch.zeros(650), [(d.x_train, d.y_train)], [0],
                            [torch.Generator()], [stale], Optimization(2, 8, 0.1))


def _without_ids(record_dp: dict) -> dict:
    """A carried record-level state, less the random id of each charge."""
    ledger = record_dp["ledger"]
    events = [{k: v for k, v in e.items() if k != "charge_id"} for e in ledger["events"]]
    return {**record_dp, "ledger": {**ledger, "events": events}}


def test_a_participant_in_a_skewed_group_trains_as_if_alone() -> None:
    """Participants that have run all their steps drop out of the group's later
    steps; those still running get what they get alone (to float32 summation
    order: the padded batch width differs)."""
    spec = SPECS["mlp"]
    sizes = [60, 9, 25, 14]  # 4, 1, 2 and 1 steps at batch 16
    shards = [shard(n, spec, seed=i) for i, n in enumerate(sizes)]
    plans = [plan(sigma=0.8 + 0.1 * i, clip=0.5 + 0.25 * i, n=n, batch_size=16, epochs=1)
             for i, n in enumerate(sizes)]
    assert sorted(p.steps_per_round for p in plans) == [1, 1, 2, 4]
    opt = Optimization(epochs=1, batch_size=16, lr=0.1, weight_decay=0.01, proximal_mu=0.2)
    model = build_model(spec, seed=0)
    w0 = torch.from_numpy(get_flat(model))
    data = [(d.x_train, d.y_train) for d in shards]

    def run(indices: list[int], max_group: int) -> list:
        return train_vectorized_dp(model, w0, [data[i] for i in indices], [11 + i for i in indices],
                                   [torch.Generator().manual_seed(100 + i) for i in indices],
                                   [plans[i] for i in indices], opt, max_group=max_group)

    together = run([0, 1, 2, 3], max_group=4)
    for i, got in enumerate(together):
        (alone,) = run([i], max_group=1)
        torch.testing.assert_close(got.delta, alone.delta, rtol=0, atol=1e-7)
        assert got.loss == pytest.approx(alone.loss, rel=1e-6)
        assert (got.examples_seen, got.steps) == (alone.examples_seen, alone.steps)
