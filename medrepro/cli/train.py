"""``medrepro-train [overrides]`` (``python train.py`` in the repository): train, validate
and test one model, or sweep with ``-m`` (see README.md)."""

import sys

import hydra
from omegaconf import DictConfig

from medrepro.cli.optional_features import refuse_missing_features
from medrepro.cli.renamed_keys import refuse_renamed_keys
from medrepro.core.config_tree import CONFIG_DIR
from medrepro.core.quiet import quiet_library_output
from medrepro.jobs.job_runner import run_job


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _train(cfg: DictConfig) -> float | None:
    quiet_library_output()
    return run_job(cfg)


def main() -> None:
    refuse_renamed_keys(sys.argv[1:])  # one sentence instead of Hydra's "not in struct"
    refuse_missing_features(sys.argv[1:])  # launchers, search and loggers need the scale extra
    _train()
