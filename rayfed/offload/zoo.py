"""The models tasks run, their int8 variants, and the real work of one task.

Models come from rayfed's registry (``logreg``/``mlp``/``cnn``/``cnn1d``), quickly
trained on their data set at start, or from ``source``: a ``state_dict`` file or
an MLflow model URI, such as the ``model`` artifact of a federated job.

The int8 variant is post-training *dynamic* quantization (Jacob et al. 2018,
"Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
Only Inference"), done by the compression package's
:func:`rayfed.compression.quantize.quantize_dynamic_int8`, the one implementation
the final-model export uses too: Linear weights are stored in int8 and
activations are quantized on the fly. It is offered only for models made of
Linear layers (plus Flatten/ReLU), where dynamic quantization leaves nothing in
fp32. It does the same FLOPs; its measured time and accuracy differ, and the
cost model learns both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rayfed.compression.quantize import quantize_dynamic_int8
from rayfed.data.datasets import ArrayDataset, load_splits
from rayfed.errors import ConfigError
from rayfed.models.registry import ModelSpec, build_model
from rayfed.offload.config import WorkloadConfig, ZooModelConfig
from rayfed.train.loop import evaluate, make_optimizer, tensor_batches, train_epoch

TRAIN_LR = 0.05
_LINEAR_ONLY = (nn.Linear, nn.ReLU, nn.Flatten, nn.Sequential)


@dataclass(frozen=True, eq=False)
class ZooModel:
    """Everything a device needs to rebuild a model: spec and weights."""

    key: str
    spec: ModelSpec
    state: dict[str, torch.Tensor]
    dataset: str
    accuracy: dict[str, float]  # per variant: "fp32", and "int8" when it exists


def is_linear_only(model: nn.Module) -> bool:
    return all(isinstance(m, _LINEAR_ONLY) for m in model.modules())


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every ``nn.Linear`` (a copy; ``model`` is kept)."""
    return quantize_dynamic_int8(model)


def load_data(name: str, *, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    return load_splits(name, seed=seed, num_samples=4000)


def _load_state(source: str) -> dict[str, torch.Tensor]:
    """A ``state_dict`` file, or an MLflow model URI resolved against
    ``MLFLOW_TRACKING_URI``, else the federated job's default store."""
    if source.endswith((".pt", ".pth")):
        return torch.load(source, map_location="cpu", weights_only=True)
    import mlflow.pytorch

    from rayfed.tracking.mlflow import default_tracking_uri

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(default_tracking_uri())
    try:
        return mlflow.pytorch.load_model(source, map_location="cpu").state_dict()
    finally:
        mlflow.set_tracking_uri(previous)


def mlflow_errors() -> type[Exception]:
    try:
        from mlflow.exceptions import MlflowException
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return RuntimeError
    return MlflowException


def build_zoo_model(key: str, m: ZooModelConfig, data: tuple[ArrayDataset, ArrayDataset],
                    *, seed: int) -> ZooModel:
    """Build (or load) model ``key``, train it briefly, and measure each variant."""
    pool, test = data
    spec = ModelSpec(name=m.name, input_shape=pool.input_shape, num_classes=pool.num_classes,
                     hidden_sizes=tuple(m.hidden_sizes), channels=tuple(m.channels))
    model = build_model(spec, seed=seed)
    if m.source:
        try:
            model.load_state_dict(_load_state(m.source))
        except (RuntimeError, OSError, mlflow_errors()) as exc:
            raise ConfigError([f"offload.workload.models.{key}.source={m.source!r} does not "
                               f"load into a {m.name} with hidden_sizes={m.hidden_sizes}, "
                               f"channels={m.channels}: {str(exc).splitlines()[0]}; set "
                               "name/hidden_sizes/channels to the trained model's"]) from exc
    elif m.train_epochs:
        x, y = torch.from_numpy(pool.x), torch.from_numpy(pool.y)
        opt = make_optimizer(model.parameters(), name="sgd", lr=0.1, momentum=0.9)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(m.train_epochs):
            train_epoch(model, tensor_batches(x, y, batch_size=32, generator=gen), opt)
    xt, yt = torch.from_numpy(test.x), torch.from_numpy(test.y)
    accuracy = {"fp32": evaluate(model, xt, yt)[1]}
    if is_linear_only(model):
        accuracy["int8"] = evaluate(quantize_int8(model), xt, yt)[1]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return ZooModel(key=key, spec=spec, state=state, dataset=m.dataset, accuracy=accuracy)


def build_zoo(workload: WorkloadConfig, *, seed: int) -> dict[str, ZooModel]:
    """Every model some task kind uses, trained with one torch thread: the driver
    shares the cores with the device actors, and spinning OpenMP threads on
    oversubscribed cores run many times slower."""
    used = {t.model for t in workload.tasks.values()}
    data = {name: load_data(name) for name in {workload.models[k].dataset for k in used}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {k: build_zoo_model(k, workload.models[k], data[workload.models[k].dataset],
                                   seed=seed)
                for k in sorted(used)}
    finally:
        torch.set_num_threads(threads)


def instantiate(zm: ZooModel) -> dict[str, nn.Module]:
    """The runnable variants of ``zm``: ``fp32`` and, for Linear-only models, ``int8``."""
    model = build_model(zm.spec)
    model.load_state_dict(zm.state)
    model.eval()
    variants = {"fp32": model}
    if "int8" in zm.accuracy:
        variants["int8"] = quantize_int8(model)
    return variants


def run_task(model: nn.Module, op: str, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The real work: an inference batch (returns logits) or one SGD step (returns the
    update ``-lr * grad``, leaving the model's weights untouched for the next task)."""
    if op == "infer":
        with torch.no_grad():
            return model(x)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    update = torch.cat([(-TRAIN_LR * p.grad).flatten() for p in model.parameters()
                        if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return update


def batch(data: ArrayDataset, *, start: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` consecutive examples from ``start``, wrapping around the data set."""
    idx = (start + np.arange(size)) % len(data)
    return data.x[idx], data.y[idx]
