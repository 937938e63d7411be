"""Edge/cloud offloading: ``python jobs/offload.py [offload=<fleet>] [offload.policy=all]``.

Keys: ``offload.policy`` (one policy or ``all``), ``offload.num_tasks``,
``offload.arrival_rate``, and the fleet profile ``offload=default|small``.
See docs/offloading.md.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from rayfed.offload.config import register_offload_configs
from rayfed.offload.job import run_from_hydra

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
register_offload_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="offload_job")
def main(cfg: DictConfig) -> float | None:
    return run_from_hydra(cfg)


if __name__ == "__main__":
    main()
