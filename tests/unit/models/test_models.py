"""Model registry: shapes, Opacus compatibility, flat weights, seeded builds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus.validators import ModuleValidator

from rayfed.config import ModelConfig
from rayfed.models import (
    MODELS,
    ModelSpec,
    build_model,
    get_flat,
    num_params,
    set_flat,
    spec_from_config,
)

# One input shape per model that it accepts, as the datasets produce them.
SHAPES: dict[str, list[tuple[int, ...]]] = {
    "logreg": [(30,), (1, 8, 8)],
    "mlp": [(30,), (1, 8, 8), (3, 32, 32)],
    "cnn": [(1, 8, 8), (1, 28, 28), (3, 32, 32)],
    "cnn1d": [(1, 40)],
    "resnet_gn": [(3, 32, 32), (1, 8, 8)],
}
CASES = [(name, shape) for name, shapes in SHAPES.items() for shape in shapes]


def spec(name: str, shape: tuple[int, ...], num_classes: int = 10) -> ModelSpec:
    return ModelSpec(name, shape, num_classes, hidden_sizes=(16, 8), channels=(4, 6))


def test_every_registered_model_is_covered() -> None:
    assert set(SHAPES) == set(MODELS)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=[f"{n}{s}" for n, s in CASES])
def test_logits_have_batch_by_classes_shape(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(spec(name, shape, num_classes=7), seed=0)
    out = model(torch.randn(5, *shape))
    assert out.shape == (5, 7)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "shape"), CASES, ids=[f"{n}{s}" for n, s in CASES])
def test_every_model_is_opacus_compatible(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(spec(name, shape), seed=0)
    assert ModuleValidator.validate(model, strict=False) == []


def test_samples_do_not_mix_in_a_batch() -> None:
    # What Opacus relies on: each sample's logits depend on that sample only.
    for name, shape in CASES:
        model = build_model(spec(name, shape), seed=0).eval()
        x = torch.randn(4, *shape)
        with torch.no_grad():
            batched = model(x)
            single = torch.cat([model(x[i : i + 1]) for i in range(4)])
        torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)


def test_logreg_and_mlp_sizes_are_hand_counted() -> None:
    assert num_params(build_model(ModelSpec("logreg", (30,), 2))) == 30 * 2 + 2
    mlp = build_model(ModelSpec("mlp", (1, 8, 8), 10, hidden_sizes=(16, 8)))
    assert num_params(mlp) == (64 * 16 + 16) + (16 * 8 + 8) + (8 * 10 + 10)


@pytest.mark.parametrize(("name", "shape"), [("cnn", (30,)), ("cnn", (1, 40)),
                                             ("cnn1d", (1, 8, 8)), ("cnn1d", (30,))])
def test_mismatched_input_shape_is_rejected_with_advice(name: str,
                                                        shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=f"model={name} needs"):
        build_model(spec(name, shape))


def test_unknown_model_names_the_options() -> None:
    with pytest.raises(ValueError, match=r"model='resnet' is unknown; pick one of \['cnn'"):
        build_model(ModelSpec("resnet", (1, 8, 8), 10))


@pytest.mark.parametrize(("name", "shape"), CASES, ids=[f"{n}{s}" for n, s in CASES])
def test_flat_round_trip_is_exact(name: str, shape: tuple[int, ...]) -> None:
    model = build_model(spec(name, shape), seed=0)
    n = num_params(model)
    flat = np.random.default_rng(1).normal(size=n).astype(np.float32)
    set_flat(model, flat)
    back = get_flat(model)
    assert back.dtype == np.float32
    assert back.shape == (n,)
    np.testing.assert_array_equal(back, flat)
    # Parameters are laid out in module order: the first weight comes first.
    first = next(model.parameters())
    np.testing.assert_array_equal(first.detach().numpy().reshape(-1), flat[: first.numel()])


def test_get_flat_is_a_copy() -> None:
    model = build_model(spec("mlp", (30,)), seed=0)
    flat = get_flat(model)
    flat[:] = 0.0
    assert np.abs(get_flat(model)).sum() > 0


def test_set_flat_copies_a_read_only_input() -> None:
    model = build_model(spec("mlp", (30,)), seed=0)
    flat = np.ones(num_params(model), dtype=np.float32)
    flat.setflags(write=False)
    set_flat(model, flat)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # training must not write into the input
    np.testing.assert_array_equal(flat, np.ones_like(flat))


@pytest.mark.parametrize("shape_delta", [(-1,), (1,), "row", "column"])
def test_set_flat_rejects_wrong_shapes(shape_delta: object) -> None:
    model = build_model(spec("mlp", (30,)), seed=0)
    n = num_params(model)
    before = get_flat(model)
    bad = {(-1,): np.zeros(n - 1), (1,): np.zeros(n + 1), "row": np.zeros((1, n)),
           "column": np.zeros((n, 1))}[shape_delta]  # type: ignore[index]
    with pytest.raises(ValueError, match=rf"model expects \({n},\)"):
        set_flat(model, bad.astype(np.float32))
    np.testing.assert_array_equal(get_flat(model), before)


@pytest.mark.parametrize(("name", "shape"), CASES, ids=[f"{n}{s}" for n, s in CASES])
def test_equal_seeds_give_identical_weights(name: str, shape: tuple[int, ...]) -> None:
    a = get_flat(build_model(spec(name, shape), seed=3))
    b = get_flat(build_model(spec(name, shape), seed=3))
    c = get_flat(build_model(spec(name, shape), seed=4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_seeded_build_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_model(spec("cnn", (1, 8, 8)), seed=99)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


def test_spec_from_config_converts_lists_to_tuples() -> None:
    s = spec_from_config(ModelConfig(name="cnn", hidden_sizes=[5], channels=[2, 3]),
                         input_shape=[1, 8, 8], num_classes=4)  # type: ignore[arg-type]
    assert s == ModelSpec("cnn", (1, 8, 8), 4, hidden_sizes=(5,), channels=(2, 3))
    # Frozen and hashable, so equal specs are one cache key.
    assert hash(s) == hash(ModelSpec("cnn", (1, 8, 8), 4, hidden_sizes=(5,), channels=(2, 3)))
