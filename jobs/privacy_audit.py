"""Empirical privacy audit: ``python jobs/privacy_audit.py [overrides]``.

Runs DP-FedAvg's release with and without a canary participant
``audit.trials`` times, and reports the membership-inference test's ε lower bound
(Clopper–Pearson, ``audit.confidence``) next to the accountant's ε. Exit status
1 when the audit flags the configuration. ``audit.noise_scale=0.5`` builds the
broken configuration (noise halved behind the accountant's back). See
docs/privacy.md.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rayfed.config import Config, register_configs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
register_configs()


def audit(cfg: Config) -> bool:
    from rayfed.audit import run_audit

    out = run_audit(cfg)
    print(f"empirical ε lower bound {out['epsilon_lower']:.3f} (confidence {out['confidence']}) "
          f"vs accountant ε {out['epsilon_claimed']:.3f} at δ={out['delta']:g} over "
          f"{out['rounds']} rounds, {out['trials']} trials per world: {out['verdict']}")
    return bool(out["flagged"])


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="privacy_audit")
def main(dict_cfg: DictConfig) -> None:
    from rayfed.audit import audit_problems
    from rayfed.config import to_config, validate
    from rayfed.job import run_job

    flagged = run_job(dict_cfg, convert=to_config,
                      check=lambda cfg: validate(cfg) + audit_problems(cfg), run=audit)
    if flagged:
        sys.exit(1)


if __name__ == "__main__":
    main()
