"""The compact state-dict container: lossless, loadable, and small for the right reason."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from rayfed.compression.container import MAGIC, pack_state_dict, unpack_state_dict
from rayfed.compression.quantize import (
    quantize_dynamic_int8,
    quantize_static_int8,
    restore_int8,
    serialized_bytes,
    torch_save_bytes,
)
from rayfed.models import ModelSpec, build_model

MLP = ModelSpec("mlp", (1, 8, 8), 10, hidden_sizes=(128,))
CNN = ModelSpec("cnn", (1, 8, 8), 10)


def same(a: object, b: object) -> bool:
    """Exact equality of state-dict values, quantization parameters included."""
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(map(same, a, b))
    if not isinstance(a, torch.Tensor):
        return a == b
    if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_quantized:  # bit for bit (NaN included)
        return a.detach().numpy().tobytes() == b.detach().numpy().tobytes()
    if a.qscheme() != b.qscheme() or not torch.equal(a.int_repr(), b.int_repr()):
        return False
    if a.qscheme() == torch.per_tensor_affine:
        return a.q_scale() == b.q_scale() and a.q_zero_point() == b.q_zero_point()
    return (torch.equal(a.q_per_channel_scales(), b.q_per_channel_scales())
            and torch.equal(a.q_per_channel_zero_points(), b.q_per_channel_zero_points())
            and a.q_per_channel_axis() == b.q_per_channel_axis())


@settings(max_examples=60, deadline=None)
@given(arrays(st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8]),
              array_shapes(min_dims=0, max_dims=3, max_side=5)))
def test_any_plain_tensor_round_trips_exactly(a: np.ndarray) -> None:
    t = torch.from_numpy(a.copy())
    back = unpack_state_dict(pack_state_dict({"t": t, "none": None, "d": torch.qint8}))
    assert same(back["t"], t) and back["none"] is None and back["d"] is torch.qint8


@pytest.mark.filterwarnings("ignore:torch.quantize_per:UserWarning")
@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6),
       st.lists(st.floats(0.0009765625, 8.0), min_size=6, max_size=6),
       st.lists(st.integers(-20, 20), min_size=6, max_size=6), st.integers(0, 2**31 - 1))
def test_quantized_tensors_round_trip_per_tensor_and_per_channel(
        rows: int, cols: int, scales: list[float], zps: list[int], seed: int) -> None:
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    per_tensor = torch.quantize_per_tensor(x, scales[0], zps[0] + 20, torch.quint8)
    per_channel = torch.quantize_per_channel(
        x, torch.tensor(scales[:rows], dtype=torch.float64), torch.tensor(zps[:rows]), 0,
        torch.qint8)
    state = {"a": per_tensor, "b": (per_channel, x)}
    back = unpack_state_dict(pack_state_dict(state))
    assert same(back["a"], per_tensor) and same(back["b"], (per_channel, x))


def test_side_tensors_are_stored_narrow_and_restored_to_their_dtype() -> None:
    zp = torch.tensor([0, 3, -7], dtype=torch.int64)  # fits int8: 3 bytes, not 24
    big = torch.tensor([2**40], dtype=torch.int64)  # does not
    assert len(pack_state_dict({"z": zp})) == len(pack_state_dict({"z": zp.to(torch.int8)}))
    back = unpack_state_dict(pack_state_dict({"z": zp, "b": big}))
    assert back["z"].dtype == torch.int64 and torch.equal(back["z"], zp)
    assert torch.equal(back["b"], big)


def test_fp32_size_is_the_weights_plus_a_small_header() -> None:
    model = build_model(MLP, seed=0)
    weights = 4 * sum(p.numel() for p in model.parameters())  # 38,440 for 64-128-10
    assert weights == 38_440
    assert weights < serialized_bytes(model) < weights + 150
    assert serialized_bytes(model) < torch_save_bytes(model)


@pytest.mark.parametrize("spec", [MLP, CNN], ids=["mlp-dynamic", "cnn-static"])
def test_int8_model_reloads_into_a_fresh_model_with_identical_outputs(spec, tmp_path) -> None:
    x = torch.randn(32, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    model = build_model(spec, seed=0).eval()
    dynamic = spec.name == "mlp"
    qmodel = quantize_dynamic_int8(model) if dynamic else quantize_static_int8(model, x)
    path = tmp_path / "model_int8.rfsd"
    path.write_bytes(pack_state_dict(qmodel.state_dict()))
    assert path.stat().st_size == serialized_bytes(qmodel)
    # The skeleton is another model (other weights): everything comes from the file.
    restored = restore_int8(build_model(spec, seed=7), path.read_bytes(),
                            method="dynamic" if dynamic else "static_fx", example=x[:1])
    with torch.inference_mode():
        expected, got = qmodel(x), restored(x)
    assert torch.equal(got, expected)
    saved = qmodel.state_dict()
    back = unpack_state_dict(path.read_bytes())
    assert list(back) == list(saved) and all(same(back[k], saved[k]) for k in saved)
    # int8 codes are 1 byte per weight, against 4 in fp32; the small rest is
    # fp32 biases, scales, zero points and keys.
    assert serialized_bytes(qmodel) < serialized_bytes(model) / 3.5


def test_int8_mlp_is_smaller_in_the_container_than_with_torch_save() -> None:
    qmodel = quantize_dynamic_int8(build_model(MLP, seed=0))
    # 8,192 + 1,280 int8 weights and 138 fp32 biases = 10,024 bytes of data.
    assert 10_024 < serialized_bytes(qmodel) < 10_024 + 400 < torch_save_bytes(qmodel) - 3000


def test_corrupt_or_foreign_files_are_refused() -> None:
    blob = pack_state_dict({"w": torch.ones(3)})
    with pytest.raises(ValueError, match="magic"):
        unpack_state_dict(b"PK\x03\x04" + blob[4:])
    with pytest.raises(ValueError, match="trailing"):
        unpack_state_dict(blob + b"\x00")
    with pytest.raises(ValueError, match="version"):
        unpack_state_dict(MAGIC + struct.pack("<BI", 9, 0) + b"\x00\x00")
    with pytest.raises(TypeError, match="cannot be stored"):
        pack_state_dict({"w": "a string"})
    buf = io.BytesIO()
    torch.save({"w": torch.ones(3)}, buf)
    with pytest.raises(ValueError):
        unpack_state_dict(buf.getvalue())
