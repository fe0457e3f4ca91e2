"""Train, validate and test one model: `python train.py [overrides]` (see README.md)."""

import hydra
from omegaconf import DictConfig

import medrepro.resolvers  # noqa: F401  (registers ${medrepro_root:})
from medrepro.training import run_job


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_job(cfg)


if __name__ == "__main__":
    main()
