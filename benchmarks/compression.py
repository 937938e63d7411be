"""Compression, measured: uploaded bytes per round and final int8 models (issue #5).

Updates: the default experiment (``conf/config.yaml``: digits, 20 participants,
10 per round, Dirichlet 0.5, ``mlp`` 64-128-10, seed 0) run once per codec with
``compression=none|int8|topk`` (top-k 1 % with error feedback, and 5 % to show
what a milder ratio buys), every arm for the same rounds. The default experiment
stops at 50 rounds; the runs go on to 100 (``--rounds``) and accuracy is reported
at both, for every arm alike. Bytes are the pickled payloads the participants
upload (``summary.json``'s ``bytes_uploaded``); accuracy is the central test
accuracy after a round, and rounds-to-accuracy the first round that reaches each
target.

Final model: int8 post-training quantization of the global model after round 50
(the code ``compression.final_model=int8`` runs at the end of every job) for
``mlp`` 128 (the ``none`` run's model), a wider ``mlp`` 512-256 and the ``cnn``
(50-round runs): serialized bytes in the compact container (and with
``torch.save``), fp32 vs int8 test accuracy, and CPU latency per batch of 64.

    python -m benchmarks.compression            # full (100 rounds, reported at 50 too)
    python -m benchmarks.compression --quick    # 10 rounds
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from rayfed.compression.final import export_final_model
from rayfed.config import Config

TARGETS = (0.85, 0.90, 0.95)
# The default experiment's fl.rounds: accuracy is reported here and at the end.
DEFAULT_ROUNDS = 50
# (label, overrides): the codecs; top-k 5 % shows what a milder ratio buys.
CODECS = (("none", ["compression=none"]), ("int8", ["compression=int8"]),
          ("topk 1% + error feedback", ["compression=topk", "compression.topk_ratio=0.01"]),
          ("topk 5% + error feedback", ["compression=topk", "compression.topk_ratio=0.05"]))
# (label, overrides) of the final-model runs; "mlp" reuses the none run.
MODELS = (("mlp 64-512-256-10", ["model=mlp", "model.hidden_sizes=[512,256]"]),
          ("cnn 16-32 + 128 head", ["model=cnn"]))


def compose(overrides: list[str], tmp: str) -> Config:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rayfed.config import check, register_configs, to_config

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = to_config(hydra_compose(config_name="config", overrides=[
            "tracking.enabled=false", "checkpoint.enabled=false", "runtime.num_cpus=2",
            f"output_dir={tmp}", *overrides]))
    return check(cfg)


def run(cfg: Config, *, report_at: int) -> dict[str, Any]:
    """One federated run: bytes, accuracy after ``report_at`` rounds and at the end,
    rounds-to-accuracy, and the int8 report of the model after ``report_at`` rounds."""
    from rayfed.fl.orchestrator import Orchestrator

    export = None
    history = []
    with Orchestrator(cfg) as orch:
        for r in orch.rounds():
            history.append(r)
            if r.server_round == min(report_at, cfg.fl.rounds):
                orch.evaluate()  # this round's global weights into orch.model
                export = export_final_model(orch.model, orch._x_test, orch._y_test,
                                            cfg=cfg.compression, data_seed=cfg.dataset.seed,
                                            out_dir=Path(cfg.output_dir))
        summary = orch.summary()
    completed = [r for r in history if r.status == "completed"]
    accs = [(r.server_round, r.test_accuracy) for r in history if r.test_accuracy is not None]

    def at(rnd: int) -> dict[str, float]:
        upto = [a for r, a in accs if r <= rnd]
        return {"accuracy": upto[-1], "mean_accuracy_last5": sum(upto[-5:]) / len(upto[-5:])}

    return {
        "rounds": cfg.fl.rounds,
        "final_accuracy": summary["final_accuracy"],
        "at": {str(rnd): at(rnd) for rnd in sorted({min(report_at, cfg.fl.rounds),
                                                     cfg.fl.rounds})},
        "bytes_uploaded": summary["bytes_uploaded"],
        "bytes_uploaded_accepted": summary["bytes_uploaded_accepted"],
        "bytes_per_round": summary["bytes_uploaded"] / max(len(completed), 1),
        "bytes_per_update": summary["bytes_uploaded"] / max(sum(r.num_reported
                                                                for r in completed), 1),
        "num_params": summary["num_params"],
        "rounds_to": {str(t): next((rnd for rnd, a in accs if a >= t), None) for t in TARGETS},
        "accuracy_curve": [a for _, a in accs],
        "final_model": export.summary.get("final_model_quantization") if export else None,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="10 rounds")
    args = ap.parse_args(argv)
    rounds = 10 if args.quick else args.rounds
    report_at = min(DEFAULT_ROUNDS, rounds)
    tmp = tempfile.mkdtemp(prefix="rayfed-bench-compression-")
    common = ["compression.final_model=int8"]
    updates = {label: run(compose([*common, f"fl.rounds={rounds}", *o], tmp),
                          report_at=report_at)
               for label, o in CODECS}
    models = {"mlp 64-128-10": updates["none"]["final_model"]}
    for label, overrides in MODELS:
        models[label] = run(compose([*common, f"fl.rounds={report_at}", *overrides], tmp),
                            report_at=report_at)["final_model"]
    return {"rounds": rounds, "report_at": report_at, "updates": updates, "models": models}


def report(result: dict[str, Any]) -> str:
    """Markdown section for RESULTS.md and docs/compression.md."""
    up = result["updates"]
    base = up["none"]
    checkpoints = list(base["at"])
    head = ["compression", "bytes/update", "fewer bytes"]
    for rnd in checkpoints:
        head += [f"acc @{rnd}", f"Δ @{rnd} (pts)", f"mean acc, rounds {max(int(rnd) - 4, 1)}–{rnd}"]
    head += [f"rounds to {t:.0%}" for t in TARGETS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, r in up.items():
        row = [label, f"{r['bytes_per_update']:,.0f}",
               f"{base['bytes_uploaded'] / r['bytes_uploaded']:.2f}×"]
        for rnd in checkpoints:
            a, b = r["at"][rnd], base["at"][rnd]
            row += [f"{a['accuracy']:.4f}", f"{100 * (a['accuracy'] - b['accuracy']):+.2f}",
                    f"{a['mean_accuracy_last5']:.4f}"]
        row += [str(r["rounds_to"][str(t)] or "never") for t in TARGETS]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"{result['rounds']} rounds for every arm, {base['num_params']:,} parameters "
              f"(fp32 update = {4 * base['num_params']:,} bytes of data); bytes are every "
              "payload that reached the server.", "",
              "| final model | method | fp32 bytes | int8 bytes | smaller | torch.save fp32 → "
              "int8 | acc fp32 | acc int8 | Δ (pts) | ms/batch fp32 | ms/batch int8 | "
              "fp32/int8 latency | layers left fp32 |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, m in result["models"].items():
        left = ", ".join(m["fp32_layers"]) or "none"
        ts32, ts8 = m["torch_save_bytes_fp32"], m["torch_save_bytes_int8"]
        lines.append(
            f"| {label} | {m['method']} | {m['model_bytes_fp32']:,} | "
            f"{m['model_bytes_int8']:,} | {m['size_ratio']:.2f}× | "
            f"{ts32:,} → {ts8:,} ({ts32 / ts8:.2f}×) | {m['accuracy_fp32']:.4f} | "
            f"{m['accuracy_int8']:.4f} | "
            f"{100 * (m['accuracy_int8'] - m['accuracy_fp32']):+.2f} | "
            f"{m['latency_ms_fp32']:.3f} | {m['latency_ms_int8']:.3f} | "
            f"{m['latency_ratio']:.2f} | {left} |")
    lines += ["", f"Final models after round {result['report_at']}. Bytes: the state dict "
              "in the compact container (rayfed.compression.container; the file logged as "
              "`model_int8/model_int8.rfsd`), fp32 and int8 alike; torch.save of the same "
              "state dicts for comparison. Latency: median of 50 interleaved forward passes "
              "of a batch of 64 on the CPU with 1 torch thread; a ratio below 1 means int8 "
              "is slower. Static quantization compares on the test split minus its 64 "
              "calibration examples; dynamic on the whole test split."]
    return "\n".join(lines)


if __name__ == "__main__":
    import json

    res = main()
    print(report(res))
    print(json.dumps(res, indent=2, default=str))
