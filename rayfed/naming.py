"""Default run names from a run's choices: ``digits-mlp-fedavg``, ``-central_dp`` when private.

``conf/config.yaml`` sets ``name: ${rayfed.run_name:...}``; the name picks the
Hydra run directory (``outputs/<name>/``), the checkpoint directory and the MLflow
run name, so runs of different experiments no longer share one ``default``.
"""

from __future__ import annotations

RESOLVER = "rayfed.run_name"


def run_name(dataset: str, model: str, strategy: str, privacy: str = "none") -> str:
    """``<dataset>-<model>-<strategy>``, plus the privacy mode when it is not ``none``."""
    parts = [dataset, model, strategy] + ([privacy] if privacy not in ("none", "") else [])
    return "-".join(str(p) for p in parts)


def register_resolver() -> None:
    """Make ``${rayfed.run_name:...}`` resolvable (idempotent). Called on importing
    :mod:`rayfed`, because every path that composes ``conf/config.yaml`` (jobs, the
    preflight, tests, benchmarks) imports the package first."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, run_name)
