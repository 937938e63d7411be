"""Byzantine attacks as pure functions (issue #9, B1): no Ray."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest
import torch

from rayfed.adversary import (
    alie,
    alie_z_max,
    boost,
    flip_labels,
    gaussian,
    malicious_ids,
    sign_flip,
)
from rayfed.adversary.adversary import Adversary
from rayfed.config import AdversaryConfig, Config, FLConfig, validate
from rayfed.data.federated import ClientData
from rayfed.types import FitRes


def test_sign_flip_and_boost() -> None:
    d = np.array([1.0, -2.0, 0.5], np.float32)
    np.testing.assert_array_equal(sign_flip(d, scale=4.0), [-4.0, 8.0, -2.0])
    np.testing.assert_array_equal(boost(d, scale=20.0), [20.0, -40.0, 10.0])
    assert sign_flip(d, scale=1.0).dtype == np.float32


def test_gaussian_ignores_the_update_and_follows_the_rng() -> None:
    d = np.ones(20000, np.float32)
    g = gaussian(d, scale=0.5, rng=np.random.default_rng(1))
    assert g.dtype == np.float32 and g.shape == d.shape
    assert abs(float(g.std()) - 0.5) < 0.01 and abs(float(g.mean())) < 0.01
    np.testing.assert_array_equal(g, gaussian(d, scale=0.5, rng=np.random.default_rng(1)))


def test_flip_labels() -> None:
    y = np.array([0, 1, 9, 4])
    np.testing.assert_array_equal(flip_labels(y, num_classes=10), [9, 8, 0, 5])


@pytest.mark.parametrize("n, m, s", [(20, 4, 7), (50, 12, 14), (10, 2, 4)])
def test_alie_z_max_is_the_papers_formula(n: int, m: int, s: int) -> None:
    # Baruch et al. 2019: s = floor(n/2 + 1) - m, z = Φ⁻¹((n - s) / n).
    z = alie_z_max(num_participants=n, num_malicious=m)
    assert z == pytest.approx(NormalDist().inv_cdf((n - s) / n))
    assert alie_z_max(num_participants=20, num_malicious=4) == pytest.approx(0.3853, abs=1e-4)


def test_alie_is_mean_minus_z_std() -> None:
    honest = [np.array([1.0, 0.0]), np.array([3.0, 0.0]), np.array([2.0, 3.0])]
    out = alie(honest, z_max=1.5)
    x = np.stack(honest)
    np.testing.assert_allclose(out, x.mean(0) - 1.5 * x.std(0), rtol=1e-6)
    with pytest.raises(ValueError, match="at least one"):
        alie([], z_max=1.0)


def test_malicious_set_is_a_fraction_drawn_from_the_seed() -> None:
    a = malicious_ids(num_clients=20, fraction=0.2, seed=0)
    assert len(a) == 4 and len(set(a)) == 4 and all(0 <= i < 20 for i in a)
    assert a == malicious_ids(num_clients=20, fraction=0.2, seed=0)
    assert a != malicious_ids(num_clients=20, fraction=0.2, seed=1)
    assert malicious_ids(num_clients=20, fraction=0.0, seed=0) == ()


def _res(pid: int) -> FitRes:
    return FitRes(pid, 1, np.full(4, 0.5, np.float32), 10, 16)


def test_adversary_attacks_only_its_participants() -> None:
    adv = Adversary(AdversaryConfig(name="sign_flip", clients=[2], scale=3.0), num_clients=5,
                    per_round=5, num_classes=10)

    def never(ids: object) -> list[np.ndarray]:
        raise AssertionError("only ALIE asks for the colluders' honest updates")

    honest = _res(1)
    assert adv.act(honest, colluders_honest=never) is honest
    np.testing.assert_array_equal(adv.act(_res(2), colluders_honest=never).delta,
                                  np.full(4, -1.5, np.float32))
    data = ClientData(2, torch.zeros(3, 4), torch.tensor([0, 1, 2]), torch.zeros(0, 4),
                      torch.zeros(0, dtype=torch.long))
    assert adv.poison(data) is data  # sign flipping trains honestly


def test_label_flip_and_model_replacement_poison_the_training_labels() -> None:
    for name in ("label_flip", "scaling"):
        adv = Adversary(AdversaryConfig(name=name, clients=[2]), num_clients=5, per_round=5,
                        num_classes=10)
        data = ClientData(2, torch.zeros(3, 4), torch.tensor([0, 1, 2]), torch.zeros(0, 4),
                          torch.zeros(0, dtype=torch.long))
        assert adv.poison(data).y_train.tolist() == [9, 8, 7]
        assert adv.poison(ClientData(1, *list(vars(data).values())[1:])).y_train.tolist() \
            == [0, 1, 2]


def test_alie_colluders_send_one_common_update_per_round() -> None:
    adv = Adversary(AdversaryConfig(name="alie", clients=[1, 3]), num_clients=20,
                    per_round=20, num_classes=10)
    assert adv.z_max == pytest.approx(alie_z_max(num_participants=20, num_malicious=2))
    asked: list[list[int]] = []

    def honest(ids: list[int]) -> list[np.ndarray]:
        asked.append(list(ids))
        return [np.full(4, float(i)) for i in ids]

    a, b = adv.act(_res(1), colluders_honest=honest), adv.act(_res(3), colluders_honest=honest)
    assert asked == [[1, 3]]  # estimated once per round
    np.testing.assert_allclose(a.delta, 2.0 - adv.z_max * 1.0, rtol=1e-6)
    np.testing.assert_array_equal(a.delta, b.delta)


def test_config_problems_name_every_key() -> None:
    cfg = Config(fl=FLConfig(num_clients=10, clients_per_round=10),
                 adversary=AdversaryConfig(name="nope", fraction=1.5, clients=[12], scale=0,
                                           z_max=-1))
    problems = validate(cfg)
    for key in ("adversary='nope'", "adversary.fraction=1.5", "adversary.clients",
                "adversary.scale=0", "adversary.z_max=-1"):
        assert any(p.startswith(key) for p in problems), (key, problems)
    none_hit = Config(adversary=AdversaryConfig(name="gaussian", fraction=0.01))
    assert any("makes no participant" in p for p in validate(none_hit))


def test_malformed_map_is_validated_and_applied_per_participant() -> None:
    bad = Config(fl=FLConfig(num_clients=4, clients_per_round=4),
                 adversary=AdversaryConfig(malformed={1: "nan", 7: "bogus"}))
    problems = validate(bad)
    assert any(p.startswith("adversary.malformed: modes ['bogus']") for p in problems)
    assert any(p.startswith("adversary.malformed: participant ids [7]") for p in problems)
    adv = Adversary(AdversaryConfig(malformed={1: "zero_examples", 2: "wrong_dtype"}),
                    num_clients=4, per_round=4, num_classes=10)
    assert adv.act(_res(1), colluders_honest=list).num_examples == 0
    assert adv.act(_res(2), colluders_honest=list).delta.dtype == np.float64
    honest = _res(3)
    assert adv.act(honest, colluders_honest=list) is honest
