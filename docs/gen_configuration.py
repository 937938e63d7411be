"""Generate docs/configuration.md from the schema: ``python docs/gen_configuration.py``.

Every key comes from walking ``dataclasses.fields`` of :class:`rayfed.config.Config`
(so sections keep being found wherever their classes are defined), its default from
the composed default config (``conf/config.yaml``), and its meaning from the comment
lines above the field in the section class's source, else from ``MEANINGS`` below.
Groups and their options come from ``conf/<group>/*.yaml`` (the first comment line
of each file describes it). ``--check`` exits 1 when the committed file is stale;
``tests/unit/test_docs_configuration.py`` runs it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
OUT = REPO / "docs" / "configuration.md"
# The federated job's groups (conf/offload and conf/train belong to other jobs).
GROUPS = ("dataset", "model", "partition", "strategy", "privacy", "compression", "secure_agg",
          "adversary", "experiment")

# Meanings of keys whose field has no comment in the schema.
MEANINGS = {
    "name": "the run's name: output folder `outputs/<name>/`, checkpoints, MLflow run "
            "name; by default `<dataset>-<model>-<strategy>`, plus the privacy mode when on",
    "seed": "seeds the partition, the selection, model init and local training",
    "resume": "continue from the newest checkpoint of `name`",
    "output_dir": "where summary.json and plots go; the job sets it to Hydra's run directory",
    "dataset": "the data set (group `dataset`)",
    "dataset.name": "the data set: one of the `dataset` group's options",
    "model": "the network (group `model`)",
    "model.name": "the network: one of the `model` group's options",
    "model.hidden_sizes": "`mlp` hidden layer widths",
    "model.channels": "`cnn`/`cnn1d` convolution channels, one entry per layer",
    "partition": "how the data is split over participants (group `partition`)",
    "partition.name": "`iid`, `dirichlet` (label skew) or `shards`",
    "partition.alpha": "Dirichlet concentration (smaller = more label skew)",
    "partition.shards_per_client": "`shards`: label-sorted shards per participant",
    "partition.min_samples": "smallest shard `dirichlet` accepts (it redraws below)",
    "strategy": "server aggregation (group `strategy`)",
    "strategy.name": "the preset: one of the `strategy` group's options",
    "strategy.reducer": "`weighted_mean`, `median`, `trimmed_mean` or `krum`",
    "strategy.server_optimizer": "server step on the aggregate: `sgd`, `adam`, `yogi`, "
                                 "`adagrad`",
    "strategy.server_lr": "server learning rate",
    "strategy.server_momentum": "server momentum (FedAvgM uses 0.9)",
    "strategy.beta1": "FedAdam/FedYogi first-moment decay",
    "strategy.beta2": "FedAdam/FedYogi second-moment decay",
    "strategy.tau": "FedAdam/FedYogi/FedAdagrad adaptivity ε",
    "strategy.trim_ratio": "trimmed mean: share cut at each end",
    "strategy.num_byzantine": "Krum's f; needs 2f+3 participants per round",
    "strategy.num_selected": "Multi-Krum's m",
    "fl": "the federated rounds",
    "fl.num_clients": "participants",
    "fl.rounds": "rounds",
    "fl.local_epochs": "local epochs per round",
    "fl.batch_size": "local batch size",
    "fl.lr": "local learning rate",
    "fl.optimizer": "local optimizer, `sgd` or `adam` (its state carries between rounds)",
    "fl.momentum": "local SGD momentum",
    "fl.weight_decay": "local weight decay",
    "fl.round_timeout_s": "the round deadline: later reports are dropped",
    "fl.eval_every": "central evaluation period in rounds (0 = last round only)",
    "runtime": "how the run uses Ray",
    "runtime.placement": "`pooled` (a pool of actors hosts all participants) or "
                         "`dedicated` (an actor each)",
    "runtime.max_restarts": "actor restarts after a crash",
    "runtime.include_dashboard": "start Ray's dashboard with a local Ray",
    "tracking": "MLflow tracking",
    "tracking.enabled": "log to MLflow",
    "tracking.experiment": "MLflow experiment name",
    "tracking.log_model": "log the final model with MLflow's PyTorch flavour",
    "checkpoint": "checkpoints for `resume=true` (docs/architecture.md)",
    "checkpoint.enabled": "write checkpoints",
    "checkpoint.dir": "checkpoint root; a run writes under `<dir>/<name>/`",
    "checkpoint.every": "rounds between checkpoints",
    "checkpoint.keep_last": "checkpoints kept",
    "faults": "chaos injection for testing the failure paths",
    "faults.raise_clients": "these participants raise in their round",
    "faults.slow_clients": "these participants sleep `slow_delay_s` in their round",
    "faults.slow_delay_s": "the delay of `slow_clients`",
    "adversary": "Byzantine participants (group `adversary`, docs/reliability.md)",
    "compression": "update codecs and the int8 final model (group `compression`, "
                   "docs/compression.md)",
    "privacy": "differential privacy (group `privacy`, docs/privacy.md)",
    "privacy.name": "`none`, `local_dp` or `central_dp`",
    "privacy.clipping_norm": "per-sample (`local_dp`) or per-update (`central_dp`) L2 bound",
    "privacy.accountant": "`rdp` or `prv` (Opacus accountants)",
    "privacy.noise_placement": "`central_dp`: `server` adds the noise to the sum, "
                               "`clients` each add their share",
    "privacy.secure_rng": "draw DP noise from a cryptographically secure generator "
                          "(slower, not reproducible)",
    "audit": "`jobs/privacy_audit.py`'s settings",
    "participant": "how a participant runs its local round (docs/training.md)",
    "participant.num_workers": "`ddp`: workers of a participant's job",
    "participant.use_gpu": "`ddp`: one GPU per worker",
    "participant.precision": "`fp32`, `bf16` or `fp16` (`fp16` needs CUDA)",
    "secure_agg": "CKKS secure aggregation (group `secure_agg`, docs/security.md)",
    "secure_agg.name": "`none` or `ckks`",
    "dataset.test_fraction": "held-out global test split (scikit-learn sets)",
    "fl.client_fraction": "share of `fl.num_clients` selected per round, instead of "
                          "`fl.clients_per_round` (set that to null)",
    "runtime.vectorize_group": "participants stacked per vmapped group (memory: group × "
                               "parameters)",
    "adversary.seed": "draws the malicious ids from `fraction`",
    "privacy.noise_multiplier": "σ; null = solved from `target_epsilon` for the planned run",
    "audit.confidence": "confidence of the audit's ε lower bound (Clopper–Pearson)",
    "secure_agg.coeff_mod_bit_sizes": "CKKS coefficient modulus chain; above SEAL's "
                                      "128-bit bound is refused",
    "secure_agg.global_scale_bits": "CKKS scale 2^bits",
}

# Options whose YAML file has no header comment.
OPTION_NOTES = {
    "model=cnn": "2-D convolutional network for image sets (`mnist`, `cifar10`, `digits`)",
    "model=cnn1d": "1-D convolutional network for sequences (`mnist1d`)",
    "model=logreg": "multinomial logistic regression",
    "model=mlp": "multi-layer perceptron (ReLU)",
    "partition=iid": "uniform random split",
    "strategy=fedavg": "FedAvg (McMahan et al. 2017): weighted mean of updates",
    "strategy=fedavgm": "FedAvg with server momentum (Hsu et al. 2019)",
    "strategy=fedprox": "FedProx (Li et al. 2020): proximal term μ at the participants",
    "strategy=fedadagrad": "FedAdagrad (Reddi et al. 2021)",
    "strategy=median": "coordinate-wise median (Yin et al. 2018)",
    "strategy=trimmed_mean": "coordinate-wise trimmed mean (Yin et al. 2018)",
    "compression=none": "updates sent as float32",
}


def section_classes() -> dict[str, type]:
    """Each section of :class:`Config` and its class, found through the fields."""
    from rayfed.config import Config

    cfg = Config()
    return {f.name: type(getattr(cfg, f.name)) for f in dataclasses.fields(Config)
            if dataclasses.is_dataclass(getattr(cfg, f.name))}


def field_comments(cls: type) -> dict[str, str]:
    """The ``#`` lines right above each field of a dataclass's source, joined."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    (node,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    out: dict[str, str] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            above: list[str] = []  # the comment block directly above the field
            i = stmt.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            if above:
                out[stmt.target.id] = " ".join(above)
    return out


def class_summary(cls: type) -> str:
    """The first paragraph of a class's own docstring (not dataclass's generated one)."""
    doc = cls.__doc__ or ""
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def composed_defaults() -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from rayfed.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config")
    GlobalHydra.instance().clear()
    out = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(out, dict)
    return out


def fmt(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str) and value.startswith("${rayfed.run_name"):
        return "`<dataset>-<model>-<strategy>[-<privacy>]`"
    return f"`{value}`" if value != "" else "`''`"


def option_rows(group: str) -> list[tuple[str, str, str]]:
    """(option, description, the values it sets) for each file of a group."""
    import yaml

    rows = []
    for path in sorted((CONF / group).glob("*.yaml")):
        text = path.read_text()
        header: list[str] = []
        for ln in text.splitlines():
            if not ln.startswith("#"):
                break
            if not ln.startswith("# @package"):
                header.append(ln.lstrip("#").strip())
        values = yaml.safe_load(text) or {}
        sets = ", ".join(f"`{k}={_yaml(v)}`" for k, v in values.items()
                         if k not in ("name", "defaults") and not isinstance(v, dict))
        if group == "experiment":
            sets = "an overlay of several groups and keys (`# @package _global_`)"
        about = " ".join(header) or OPTION_NOTES.get(f"{group}={path.stem}", "")
        rows.append((path.stem, about, sets))
    return rows


def _yaml(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


def key_rows() -> list[tuple[str, str, str]]:
    from rayfed.config import Config

    defaults = composed_defaults()
    sections = section_classes()
    rows: list[tuple[str, str, str]] = []
    top = field_comments(Config)
    for f in dataclasses.fields(Config):
        if f.name in sections:
            continue
        rows.append((f.name, fmt(defaults.get(f.name)), top.get(f.name) or MEANINGS[f.name]))
    for section, cls in sections.items():
        comments = field_comments(cls)
        values = defaults.get(section, {})
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            meaning = comments.get(f.name) or MEANINGS.get(key)
            if meaning is None:
                raise SystemExit(f"{key} has no meaning: add a comment above the field in "
                                 f"{cls.__module__}.{cls.__name__} or an entry in MEANINGS "
                                 f"of {Path(__file__).name}")
            rows.append((key, fmt(values.get(f.name)), meaning))
    return rows


def render() -> str:
    sections = section_classes()
    out = [
        "# Configuration",
        "",
        "<!-- Generated by `python docs/gen_configuration.py` from the schema "
        "(rayfed.config.Config) and conf/; do not edit by hand. -->",
        "",
        "rayfed's configuration is a set of Hydra structured configs: the dataclasses "
        "reachable from `rayfed.config.Config` are the schema (types and defaults), "
        "`conf/` holds values. Override any key on the command line (`key=value`), pick a "
        "group option (`strategy=fedadam`), or apply an overlay from `conf/experiment/` "
        "(`experiment=hospitals`). `python jobs/federated.py --cfg job` prints the composed "
        "config without running anything.",
        "",
        "Before anything starts, the job checks the whole command line and config and "
        "reports every problem at once, naming the key and how to fix it, with exit "
        "status 2: an unknown key names the closest valid one (`fl.round=5`: did you "
        "mean `fl.rounds`), and a key of a feature group that is off names the options "
        "to select (`privacy.target_epsilon=3 requires privacy=central_dp or "
        "privacy=local_dp`).",
        "",
        "## Groups",
        "",
    ]
    for group in GROUPS:
        cls = sections.get(group)
        about = f" (`{cls.__name__}`): {class_summary(cls)}" if cls and class_summary(cls) \
            else f" (`{cls.__name__}`)" if cls else ""
        out += [f"### `{group}`{about}", "", "| option | what it is | sets |", "|---|---|---|"]
        out += [f"| `{o}` | {d} | {s} |" for o, d, s in option_rows(group)]
        out.append("")
    out += [
        "The DDP job (`jobs/train_ddp.py`, primary config `conf/train_job.yaml`) has the "
        "group `train`, and the offload job (`jobs/offload.py`, `conf/offload_job.yaml`) "
        "the group `offload`; their keys are in docs/training.md and docs/offloading.md.",
        "",
        "## Keys",
        "",
        "Defaults are those of `python jobs/federated.py` with no overrides (the "
        "dataclass default unless `conf/config.yaml` or a default group option sets "
        "another).",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
    ]
    out += [f"| `{k}` | {d} | {m} |" for k, d, m in key_rows()]
    out += [
        "",
        "## Environment",
        "",
        "| variable | effect |",
        "|---|---|",
        "| `RAYFED_CACHE_DIR` | where prepared splits of `digits`, `breast_cancer` and "
        "`mnist1d` are cached (default `$XDG_CACHE_HOME/rayfed` or `~/.cache/rayfed`); "
        "every actor of a run reads the split the first process wrote instead of importing "
        "scikit-learn or regenerating MNIST-1D. Entries are `.npz` read with "
        "`allow_pickle=False`; set it to the empty string to switch caching off |",
        "| `RAY_ADDRESS` | a Ray cluster to join when `runtime.address` is null |",
        "| `MLFLOW_TRACKING_URI` | the MLflow store when `tracking.uri` is null |",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/configuration.md differs from the schema")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if OUT.read_text() != text:
            print(f"{OUT} is stale: run `python docs/gen_configuration.py`", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
