"""The end-of-run step: int8 export of the final global model, with its numbers.

``rayfed.launch.run_federated`` calls :func:`export_final_model` once training is
over; this module turns the config into a call of
:func:`rayfed.compression.quantize.quantize_final_model`, writes the quantized
model twice and returns the keys ``summary.json`` gains:

* ``model_int8.rfsd``: its state dict in the compact container whose length is
  ``model_bytes_int8`` (:func:`rayfed.compression.quantize.restore_int8` loads it
  into a model built from the run's config);
* ``model_int8.pt``: TorchScript, loadable with ``torch.jit.load`` and run
  without rayfed on the device.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rayfed.compression.config import CompressionConfig
from rayfed.compression.container import pack_state_dict
from rayfed.compression.quantize import (
    QuantizationReport,
    accuracy,
    quantize_final_model,
    serialized_bytes,
)

ARTIFACT_NAME = "model_int8.pt"
STATE_ARTIFACT_NAME = "model_int8.rfsd"


@dataclass(frozen=True)
class FinalModelExport:
    summary: dict[str, Any]
    report: QuantizationReport | None = None
    # The TorchScript model and the compact state dict (the measured bytes).
    path: Path | None = None
    state_path: Path | None = None

    @property
    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in (self.path, self.state_path) if p is not None)


def save_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Trace ``model`` (quantized modules script poorly) and save it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        traced = torch.jit.trace(model, example)
    torch.jit.save(traced, str(path))
    return path


def export_final_model(model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, *,
                       cfg: CompressionConfig, data_seed: int,
                       out_dir: Path) -> FinalModelExport:
    """Measure (and with ``final_model=int8`` quantize and save) the final model.

    Without int8 export the fp32 numbers are still reported, on the full test
    split, and the int8 keys are ``None``.
    """
    if cfg.final_model == "none":
        return FinalModelExport({"model_bytes_fp32": serialized_bytes(model),
                                 "model_bytes_int8": None,
                                 "accuracy_fp32": accuracy(model, x_test, y_test),
                                 "accuracy_int8": None})
    rng = np.random.default_rng([data_seed, 0xCA1B])
    qmodel, report = quantize_final_model(
        model, x_test, y_test, num_calibration=cfg.calibration_examples,
        latency_batch_size=cfg.latency_batch_size, rng=rng)
    path = save_torchscript(qmodel, x_test[:1], out_dir / ARTIFACT_NAME)
    state_path = out_dir / STATE_ARTIFACT_NAME
    state_path.write_bytes(pack_state_dict(qmodel.state_dict()))  # model_bytes_int8 long
    details = asdict(report)
    details.update(size_ratio=report.size_ratio, latency_ratio=report.latency_ratio,
                   latency_torch_threads=1, artifact=str(path), state_artifact=str(state_path),
                   size_format="rayfed state-dict container (rayfed.compression.container)")
    summary = {"model_bytes_fp32": report.model_bytes_fp32,
               "model_bytes_int8": report.model_bytes_int8,
               "accuracy_fp32": report.accuracy_fp32,
               "accuracy_int8": report.accuracy_int8,
               "final_model_quantization": details}
    return FinalModelExport(summary, report, path, state_path)
