"""Federated training: ``python jobs/federated.py [overrides]``.

Also runs as ``ray job submit --working-dir . -- python jobs/federated.py ...``.
See docs/quickstart.md for the keys.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rayfed.config import open_dict_overrides, register_configs
from rayfed.launch import main_guard, run_from_hydra
from rayfed.runtime import exit_now
from rayfed.timing import mark

mark("imports")

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
register_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    return run_from_hydra(cfg)


if __name__ == "__main__":
    # model.kwargs.width=256 and other keys inside dict fields, without Hydra's "+".
    sys.argv[1:] = open_dict_overrides(sys.argv[1:])
    main_guard(sys.argv[1:], config_dir=CONFIG_DIR)
    mark("preflight")
    main()
    # Hydra returns only when the run (or every trial of a sweep) succeeded, all
    # written; a failure has already exited with its own status.
    exit_now(0)
