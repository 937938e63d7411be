"""Participants on GPUs (issue #16): the host trains on its device and precision.

On CPU: ``participant.precision=bf16`` runs the plain loop under ``torch.autocast``
(and turns the vmapped path off); ``participant.device=cpu`` keeps everything on
CPU. Marked ``gpu`` (skipped without CUDA): the vectorised path, DP-SGD and bf16
on CUDA, each against the same host on CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rayfed.config import ParticipantConfig, PrivacyConfig
from rayfed.fl.host import ParticipantHost
from rayfed.models import get_flat
from rayfed.models.config import build
from rayfed.plan import resolve
from rayfed.types import FitIns, FitRes
from tests.conftest import small_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def host_and_weights(tmp_path, **sections) -> tuple[ParticipantHost, np.ndarray]:
    plan = resolve(small_config(tmp_path, **sections))
    cfg = plan.config
    model = build(cfg.model, input_shape=(1, 8, 8), num_classes=10, seed=cfg.seed)
    return ParticipantHost(plan), get_flat(model)


def fit_deltas(host: ParticipantHost, weights: np.ndarray) -> list[np.ndarray]:
    tasks = [FitIns(pid, 1, 100 + pid) for pid in range(3)]
    results = host.fit(1, weights, tasks)
    assert all(isinstance(r, FitRes) for r in results), results
    return [np.asarray(r.delta) for r in results]


def test_bf16_on_cpu_autocasts_the_plain_loop(tmp_path) -> None:
    fp32, w = host_and_weights(tmp_path, participant=ParticipantConfig(device="cpu"))
    bf16, _ = host_and_weights(tmp_path, participant=ParticipantConfig(device="cpu",
                                                                       precision="bf16"))
    assert fp32._vectorize and not bf16._vectorize  # vmap does not autocast
    assert bf16._training.amp is not None
    assert bf16._training.amp.autocast_dtype is torch.bfloat16
    exact, mixed = fit_deltas(fp32, w), fit_deltas(bf16, w)
    for a, b in zip(exact, mixed, strict=True):
        assert np.isfinite(b).all()
        # bf16 keeps ~3 significant digits: close to fp32, but not equal to it.
        assert not np.array_equal(a, b)
        assert np.linalg.norm(a - b) < 0.1 * np.linalg.norm(a)


def test_fp32_on_cpu_keeps_parameters_and_data_on_cpu(tmp_path) -> None:
    host, w = host_and_weights(tmp_path, participant=ParticipantConfig(device="auto"))
    fit_deltas(host, w)
    assert host._device.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert all(p.device.type == host._device.device for p in host._model.parameters())
    assert host.participant(0).data.x_train.device.type == host._device.device


def gpu_vs_cpu(tmp_path, **sections) -> tuple[list[np.ndarray], list[np.ndarray]]:
    gpu_part = ParticipantConfig(device="cuda", **sections.pop("participant", {}))
    cpu_part = ParticipantConfig(device="cpu", precision=gpu_part.precision)
    gpu, w = host_and_weights(tmp_path, participant=gpu_part,
                              runtime={"num_gpus_per_actor": 1.0}, **sections)
    cpu, _ = host_and_weights(tmp_path, participant=cpu_part, **sections)
    assert next(gpu._model.parameters()).device.type == "cuda"
    return fit_deltas(gpu, w), fit_deltas(cpu, w)


@pytest.mark.gpu
@cuda
def test_vectorized_path_on_cuda_matches_cpu(tmp_path) -> None:
    gpu, cpu = gpu_vs_cpu(tmp_path)
    for a, b in zip(gpu, cpu, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@cuda
def test_dpsgd_on_cuda_trains_and_charges(tmp_path) -> None:
    privacy = PrivacyConfig(name="local_dp", target_epsilon=8.0, delta=1e-5)
    gpu, _ = gpu_vs_cpu(tmp_path, privacy=privacy)
    for d in gpu:
        assert np.isfinite(d).all() and np.linalg.norm(d) > 0


@pytest.mark.gpu
@cuda
def test_bf16_on_cuda_is_close_to_fp32(tmp_path) -> None:
    gpu, cpu = gpu_vs_cpu(tmp_path, participant={"precision": "bf16"})
    for a, b in zip(gpu, cpu, strict=True):
        assert np.linalg.norm(a - b) < 0.1 * np.linalg.norm(b)
