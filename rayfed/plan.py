"""Resolve once, pass plans: a run's config turned into one frozen :class:`RunPlan`.

The driver calls :func:`resolve` once per run. It validates the config (the
only call of :func:`rayfed.config.validate` in a run), solves σ, picks the
update stages and the aggregation mode, and returns a plan that is
checkpointed and shipped to every participant host. Hosts and stages read
their plans from it; none of them re-derives a plan from the config, so a value
computed here cannot drift between processes (a resumed ``central_dp`` run once
had participants noising for one σ while the ledger charged another).

Aggregation modes, chosen here and only here:

* ``mean``: FedAvg's weighted mean Σ n_i Δ_i / Σ n_i (McMahan et al. 2017);
* ``dp_mean``: DP-FedAvg's Σ clip(Δ_i), noised, over the fixed denominator
  q·N (McMahan et al. 2018);
* ``robust``: a reducer over the individual updates (median, trimmed mean, Krum);
* each of the linear two with ``encrypted=True``: summed as CKKS ciphertexts and
  opened by the decryptor (``rayfed.secure_agg``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from rayfed.compression.stages import compression_stages
from rayfed.config import Config, clients_per_round, config_hash, validate
from rayfed.data.source import DataPlan
from rayfed.errors import ConfigError
from rayfed.privacy.accounting import DpEvent
from rayfed.privacy.plan import PrivacyPlan, UserLevelPlan, privacy_plan, replan_user_level
from rayfed.privacy.stages import privacy_stages
from rayfed.secure_agg.config import SecureAggPlan, secure_agg_plan
from rayfed.secure_agg.stage import secure_agg_stages
from rayfed.stages import Pipeline, Stage

log = logging.getLogger(__name__)

AggregationMode = Literal["mean", "dp_mean", "robust"]


@dataclass(frozen=True)
class UserParts:
    """A user's own parts handed to the Python API (:func:`rayfed.run`), not named in
    the config: they travel to the actors inside the plan (cloudpickle, by reference
    to their module, or by value for ``__main__``).

    ``model``: an ``nn.Module`` class or factory; ``participant_data``:
    ``participant_id -> (train, val)``, called inside that participant's actor;
    ``test_data``: the server's held-out set, or a callable returning it (driver only).
    """

    model: Callable[..., Any] | None = None
    participant_data: Callable[[int], Any] | None = None
    test_data: Any = None

    @property
    def own_data(self) -> bool:
        return self.participant_data is not None


@dataclass(frozen=True)
class RunPlan:
    """Everything a run derives from its config, derived once."""

    config: Config
    privacy: PrivacyPlan
    secure_agg: SecureAggPlan | None
    aggregation: AggregationMode
    # Pooled actors sum their participants' updates before sending (linear modes,
    # plaintext only: under secure aggregation hosts send ciphertexts).
    partial_sums: bool
    per_round: int
    config_hash: str
    # Names this run across restarts and resumes (the checkpoint run directory's
    # name when checkpoints are on): hosts keep per-run state on their node by it.
    run_id: str = ""
    # dataset=files: the declared source and the input shape; otherwise what the
    # driver learnt about the data to check a custom model (or nothing).
    data: DataPlan = field(default_factory=DataPlan)
    user: UserParts = field(default_factory=UserParts)

    @property
    def encrypted(self) -> bool:
        return self.secure_agg is not None

    @property
    def stages(self) -> tuple[str, ...]:
        return build_pipeline(self).names

    def with_privacy(self, privacy: PrivacyPlan) -> RunPlan:
        """The same plan with a re-planned privacy part (a resumed run), every
        derived part that depends on it resolved again."""
        return replace(_assemble(self.config, privacy, self.run_id), data=self.data,
                       user=self.user)

    def for_hosts(self) -> RunPlan:
        """The plan as participant hosts receive it: without the server's test set."""
        if self.user.test_data is None:
            return self
        return replace(self, user=replace(self.user, test_data=None))


def resolve(cfg: Config, *, user: UserParts | None = None) -> RunPlan:
    """Validate ``cfg`` and the user's parts (every problem at once, as a
    ``ConfigError``) and plan the run.

    ``validate`` runs once; when the model and data sections pass it, the model is
    then built and run on a probe batch here (:mod:`rayfed.checks`), so that
    one message lists the config's problems and the model's.
    """
    from rayfed.checks import data_plan, user_model_problems

    user = user or UserParts()
    problems = validate(cfg)
    data, data_problems = data_plan(cfg, own_data=user.own_data, test_data=user.test_data,
                                    config_problems=problems)
    problems += data_problems
    problems += user_model_problems(cfg, data, factory=user.model)
    if problems:
        raise ConfigError(problems)
    fl = cfg.fl
    privacy = privacy_plan(cfg.privacy, num_clients=fl.num_clients,
                           per_round=clients_per_round(fl), rounds=fl.rounds,
                           batch_size=fl.batch_size, local_epochs=fl.local_epochs,
                           secure_agg=cfg.secure_agg.name != "none")
    return replace(_assemble(cfg, privacy), data=data, user=user)


def _assemble(cfg: Config, privacy: PrivacyPlan, run_id: str = "") -> RunPlan:
    mode: AggregationMode
    if cfg.strategy.reducer != "weighted_mean":
        mode = "robust"
    elif privacy.unit_weights:
        mode = "dp_mean"
    else:
        mode = "mean"
    sa = secure_agg_plan(cfg.secure_agg, unit_weights=privacy.unit_weights,
                         rounds=cfg.fl.rounds, num_clients=cfg.fl.num_clients)
    partial = (mode != "robust" and sa is None and cfg.runtime.local_aggregation
               and cfg.runtime.placement == "pooled")
    return RunPlan(config=cfg, privacy=privacy, secure_agg=sa, aggregation=mode,
                   partial_sums=partial, per_round=clients_per_round(cfg.fl),
                   config_hash=config_hash(cfg), run_id=run_id or secrets.token_hex(6))


def build_pipeline(plan: RunPlan) -> Pipeline:
    """The update pipeline of a plan: clip → noise → compress → encrypt."""
    stages: list[Stage] = [*privacy_stages(plan.privacy),
                           *compression_stages(plan.config.compression),
                           *secure_agg_stages(plan.secure_agg)]
    return Pipeline(sorted(stages, key=lambda s: s.order))


def resume_plan(plan: RunPlan, state: dict[str, Any]) -> RunPlan:
    """The plan of a resumed run: the checkpoint's, re-solved only where the
    resumed run changed it (``fl.rounds``), from the ledger spent so far, and
    under the budget the config sets now (never the checkpoint's)."""
    user = plan.privacy.user
    saved = (state.get("plan") or {}).get("privacy", {}).get("user")
    spent_state = (state.get("privacy") or {}).get("user")
    if user is None or not saved or not spent_state:
        return plan
    started = replace(UserLevelPlan(**saved), target_epsilon=user.target_epsilon)
    spent = [DpEvent(**e) for e in spent_state["ledger"]["events"]]
    new = replan_user_level(started, spent=spent, rounds_done=state["server_round"],
                            rounds=plan.config.fl.rounds)
    if new.noise_multiplier != started.noise_multiplier:
        log.warning("fl.rounds=%d on resume: σ re-solved for the %d rounds left, %.4f -> "
                    "%.4f; participants add, and the ledger charges, the new σ",
                    plan.config.fl.rounds, plan.config.fl.rounds - state["server_round"],
                    started.noise_multiplier, new.noise_multiplier)
    return plan.with_privacy(PrivacyPlan("central_dp", user=new))


def plan_state(plan: RunPlan) -> dict[str, Any]:
    """The parts of a plan a checkpoint keeps, to compare and restore on resume."""
    return {"privacy": asdict(plan.privacy), "aggregation": plan.aggregation,
            "stages": list(plan.stages)}
