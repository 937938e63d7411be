"""The Python API: ``rayfed.run`` with a config and the user's own parts.

Flower users write a ``ClientApp`` around their model and data; here the same
takes one call. The config is Hydra overrides (composed from ``conf/`` exactly as
``jobs/federated.py`` composes them) or a typed :class:`~rayfed.config.Config`;
the user's model, data and test set ride along in the plan, and the run goes
through :func:`rayfed.plan.resolve` and :func:`rayfed.launch.run_federated_model`,
the command line's own path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from rayfed.config import Config, TrackingConfig, open_dict_overrides, register_configs, to_config
from rayfed.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class RunResult:
    """What a run leaves: its summary (``summary.json``), the final global model and
    the MLflow run id (None when tracking is off)."""

    summary: dict[str, Any]
    model: nn.Module
    mlflow_run_id: str | None

    @property
    def accuracy(self) -> float | None:
        """Test accuracy, or with no server test set the federated one."""
        acc = self.summary.get("final_accuracy")
        return acc if acc is not None else self.summary.get("final_federated_accuracy")


def compose(overrides: Sequence[str] = (), *, config_dir: Path = CONFIG_DIR) -> Config:
    """The typed config that ``jobs/federated.py`` would compose from ``overrides``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name="config",
                                overrides=open_dict_overrides(list(overrides)))
        except Exception as exc:  # Hydra's errors name the override
            cause = f" ({exc.__cause__})" if exc.__cause__ else ""
            raise ConfigError([" ".join(f"{exc}{cause}".split())]) from exc
        return to_config(cfg)


def _qualname(obj: Callable[..., Any]) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def run(
    overrides: Sequence[str] = (),
    *,
    config: Config | None = None,
    model: Callable[..., nn.Module] | None = None,
    participant_data: Callable[[int], Any] | None = None,
    test_data: Any = None,
    tracking: bool | TrackingConfig | None = None,
    output_dir: str | None = None,
    show_progress: bool = False,
) -> RunResult:
    """Run a federated experiment and return its :class:`RunResult`.

    ``model``: an ``nn.Module`` class or factory (it gets ``num_classes`` and
    ``input_shape`` if it takes them); ``participant_data(participant_id) ->
    (train, val)`` runs inside that participant's actor (each an ``(x, y)`` pair,
    an ``ArrayDataset`` or a torch ``Dataset``); ``test_data``: the server's
    held-out set, or a callable returning it; without it the run reports
    federated evaluation on the participants' validation splits. ``tracking``:
    ``False`` turns MLflow off, a :class:`TrackingConfig` replaces the section.
    """
    from rayfed.launch import run_federated_model
    from rayfed.plan import UserParts, resolve

    if config is not None and overrides:
        raise ConfigError(["pass either overrides or config to rayfed.run, not both"])
    cfg = config if config is not None else compose(overrides)
    if model is not None:
        cfg = replace(cfg, model=replace(cfg.model, name="custom", _target_=_qualname(model)))
    if participant_data is not None:
        cfg = replace(cfg, dataset=replace(cfg.dataset, name="custom"))
    if isinstance(tracking, TrackingConfig):
        cfg = replace(cfg, tracking=tracking)
    elif tracking is not None:
        cfg = replace(cfg, tracking=replace(cfg.tracking, enabled=bool(tracking)))
    if output_dir is not None:
        cfg = replace(cfg, output_dir=output_dir)
    plan = resolve(cfg, user=UserParts(model=model, participant_data=participant_data,
                                       test_data=test_data))
    summary, final = run_federated_model(plan, show_progress=show_progress)
    return RunResult(summary=summary, model=final, mlflow_run_id=summary.get("mlflow_run_id"))
