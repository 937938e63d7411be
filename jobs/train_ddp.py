"""Centralized DDP training with Ray Train: ``python jobs/train_ddp.py [overrides]``.

Keys: ``train=cpu|gpu`` (profile), ``train.num_workers``, ``train.use_gpu``,
``train.precision=fp32|bf16|fp16``, ``train.max_failures``, ``dataset=``,
``model=``, ``privacy=local_dp``. See docs/training.md.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from rayfed.train.config import register_train_configs
from rayfed.train.job import run_from_hydra

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
register_train_configs()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train_job")
def main(cfg: DictConfig) -> float | None:
    return run_from_hydra(cfg)


if __name__ == "__main__":
    main()
