"""Post-training int8 quantization of the final global model, measured honestly.

* Models without convolutions: **dynamic quantization** of Linear/LSTM layers
  (``torch.ao.quantization.quantize_dynamic``): int8 weights, activations
  quantized on the fly per batch, no calibration (Jacob et al. 2018,
  "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference", for the affine int8 scheme).
* Models with convolutions: **static PTQ** with the FX graph-mode flow
  (``prepare_fx`` → calibrate → ``convert_fx``), activation ranges observed on
  server-side calibration examples. ``quantize_dynamic`` has no conv kernels and
  would silently leave every convolution in fp32. torch 2.13 still ships the FX
  flow (deprecated in favour of torchao's PT2E, which is not installed), and it
  quantizes every Conv/Linear of our CNNs; if it ever fails, the model falls back
  to dynamic quantization and the report lists each layer left in fp32.

Size is the length of the serialized ``state_dict`` in rayfed's compact container
(:mod:`rayfed.compression.container`: raw weight bytes plus exact quantization
parameters, loadable with :func:`restore_int8`), for fp32 and int8 alike, never
``sys.getsizeof``; the ``torch.save`` sizes are reported next to it. Accuracy is
measured for both models on the same examples; latency is the median CPU time of
one batch.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rayfed.compression.container import pack_state_dict, unpack_state_dict
from rayfed.train import evaluate

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
DYNAMIC_TYPES = {nn.Linear, nn.LSTM}


@dataclass(frozen=True)
class QuantizationReport:
    """What int8 post-training quantization did to one model."""

    method: str  # "dynamic" or "static_fx"
    # Serialized state dicts in the compact container (what a device stores).
    model_bytes_fp32: int
    model_bytes_int8: int
    accuracy_fp32: float
    accuracy_int8: float
    latency_ms_fp32: float
    latency_ms_int8: float
    latency_batch_size: int
    eval_examples: int
    calibration_examples: int
    quantized_layers: tuple[str, ...]
    # Layers whose weights are still float32 after quantization (never hidden).
    fp32_layers: tuple[str, ...]
    # Why static quantization was not used, when it failed.
    fallback_reason: str | None = None
    # The same state dicts written by torch.save (zip records, pickled structure).
    torch_save_bytes_fp32: int = 0
    torch_save_bytes_int8: int = 0

    @property
    def size_ratio(self) -> float:
        return self.model_bytes_fp32 / self.model_bytes_int8

    @property
    def latency_ratio(self) -> float:
        """fp32 latency / int8 latency: above 1 means int8 is faster."""
        return self.latency_ms_fp32 / self.latency_ms_int8

    def metrics(self) -> dict[str, float]:
        return {"model_bytes_fp32": self.model_bytes_fp32,
                "model_bytes_int8": self.model_bytes_int8,
                "model_size_ratio": self.size_ratio,
                "accuracy_fp32": self.accuracy_fp32, "accuracy_int8": self.accuracy_int8,
                "latency_ms_fp32": self.latency_ms_fp32,
                "latency_ms_int8": self.latency_ms_int8,
                "latency_ratio": self.latency_ratio,
                "fp32_layers_left": len(self.fp32_layers)}


@contextmanager
def _quiet_deprecations() -> Iterator[None]:
    # torch.ao.quantization warns on every call that it moves to torchao; the API
    # is what this torch ships and works, so the warnings are noise in logs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao")
        warnings.filterwarnings("ignore", message=r".*(quantize_per|reduce_range).*")
        yield


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s state dict in the compact container: what a device stores."""
    return len(pack_state_dict(model.state_dict()))


def torch_save_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``, for comparison."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, CONV_TYPES) for m in model.modules())


def quantize_dynamic_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of Linear/LSTM layers (a copy; ``model`` is kept)."""
    with _quiet_deprecations():
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), DYNAMIC_TYPES, dtype=torch.qint8)


def quantize_static_int8(model: nn.Module, calibration: torch.Tensor, *,
                         batch_size: int = 256) -> nn.Module:
    """Static int8 PTQ with the FX flow, calibrated on ``calibration`` inputs."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engine = torch.backends.quantized.engine
    with _quiet_deprecations():
        prepared = prepare_fx(copy.deepcopy(model).eval(),
                              get_default_qconfig_mapping(engine),
                              example_inputs=(calibration[:1],))
        with torch.no_grad():
            for start in range(0, len(calibration), batch_size):
                prepared(calibration[start : start + batch_size])
        # Converted outside inference mode: its buffers (input scales and zero
        # points) must stay ordinary tensors, or load_state_dict cannot restore them.
        return convert_fx(prepared)


def restore_int8(skeleton: nn.Module, blob: bytes, *, method: str,
                 example: torch.Tensor) -> nn.Module:
    """The int8 model stored in ``blob`` (:func:`pack_state_dict` of its state dict).

    ``skeleton`` is an fp32 model of the same architecture (its weights do not
    matter); it is quantized with ``method`` to get the module structure, and the
    stored state replaces every weight, scale and zero point. ``example``: one
    input batch (the FX flow traces with it).
    """
    if method == "dynamic":
        qmodel = quantize_dynamic_int8(skeleton)
    elif method == "static_fx":
        qmodel = quantize_static_int8(skeleton, example)
    else:
        raise ValueError(f"unknown quantization method {method!r}; expected 'dynamic' or "
                         "'static_fx' (QuantizationReport.method)")
    qmodel.load_state_dict(unpack_state_dict(blob))
    return qmodel.eval()


def fp32_weight_layers(model: nn.Module) -> list[str]:
    """Names of layers that still hold float weights (``nn.Parameter``)."""
    return [name or "<root>" for name, m in model.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def quantized_layers(model: nn.Module) -> list[str]:
    """Names of layers whose implementation is an int8 quantized kernel."""
    return [name for name, m in model.named_modules()
            if type(m).__module__.startswith(("torch.ao.nn.quantized",
                                              "torch.ao.nn.intrinsic.quantized"))
            and not name.endswith("_packed_params")]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.inference_mode():
        return evaluate(model, x, y)[1]


def latency_ms(models: Sequence[nn.Module], batch: torch.Tensor, *, repeats: int = 50,
               warmup: int = 5, threads: int = 1) -> list[float]:
    """Median CPU wall time of one forward pass over ``batch`` per model, in ms.

    The models run interleaved, so that load from other processes hits them
    alike; ``threads`` torch threads (1: a small edge CPU, and less noise).
    """
    for m in models:
        m.eval()
    times: list[list[float]] = [[] for _ in models]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                for m, out in zip(models, times, strict=True):
                    t0 = time.perf_counter()
                    m(batch)
                    if i >= warmup:
                        out.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    return [1000 * float(np.median(t)) for t in times]


def calibration_split(num_examples: int, num_calibration: int, *,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (calibration, evaluation) indices of the server's held-out data."""
    if not 0 < num_calibration < num_examples:
        raise ValueError(f"compression.calibration_examples={num_calibration} must be "
                         f"between 1 and {num_examples - 1} (the server's held-out examples "
                         "minus at least one to evaluate on)")
    order = rng.permutation(num_examples)
    return np.sort(order[:num_calibration]), np.sort(order[num_calibration:])


def quantize_final_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                         num_calibration: int, latency_batch_size: int,
                         rng: np.random.Generator) -> tuple[nn.Module, QuantizationReport]:
    """Quantize ``model`` to int8 and measure it against fp32 on ``(x, y)``.

    Static quantization holds out ``num_calibration`` of the examples for
    calibration and compares both models on the rest; dynamic quantization needs
    no calibration and compares on all of them.
    """
    model = model.eval()
    fallback: str | None = None
    qmodel: nn.Module | None = None
    calib_idx = np.arange(0)
    eval_idx = np.arange(len(x))
    if has_conv(model):
        calib_idx, eval_idx = calibration_split(len(x), num_calibration, rng=rng)
        try:
            qmodel = quantize_static_int8(model, x[torch.from_numpy(calib_idx)])
            method = "static_fx"
        except Exception as exc:  # reported, and the conv layers listed as fp32
            fallback = f"FX static quantization failed: {type(exc).__name__}: {exc}"
    if qmodel is None:
        qmodel, method = quantize_dynamic_int8(model), "dynamic"
    xe, ye = x[torch.from_numpy(eval_idx)], y[torch.from_numpy(eval_idx)]
    batch = xe[:latency_batch_size]
    ms_fp32, ms_int8 = latency_ms([model, qmodel], batch)
    report = QuantizationReport(
        method=method,
        model_bytes_fp32=serialized_bytes(model), model_bytes_int8=serialized_bytes(qmodel),
        accuracy_fp32=accuracy(model, xe, ye), accuracy_int8=accuracy(qmodel, xe, ye),
        latency_ms_fp32=ms_fp32, latency_ms_int8=ms_int8,
        latency_batch_size=len(batch), eval_examples=len(eval_idx),
        calibration_examples=len(calib_idx),
        quantized_layers=tuple(quantized_layers(qmodel)),
        fp32_layers=tuple(fp32_weight_layers(qmodel)), fallback_reason=fallback,
        torch_save_bytes_fp32=torch_save_bytes(model),
        torch_save_bytes_int8=torch_save_bytes(qmodel))
    return qmodel, report
