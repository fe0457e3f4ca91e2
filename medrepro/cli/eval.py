"""``medrepro-eval ckpt_path=FILE [data=NAME data.root=DIR] [eval.split=test|all]
[eval.class_map={...}]`` (``python eval.py`` in the repository): test a trained model on
any data set (see README.md, "Using a trained model")."""

import hydra
from omegaconf import DictConfig

from medrepro.core.config_tree import CONFIG_DIR
from medrepro.core.quiet import quiet_library_output
from medrepro.jobs.evaluation import evaluate
from medrepro.jobs.job_runner import run_job


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _eval(cfg: DictConfig) -> None:
    quiet_library_output()
    run_job(cfg, job=evaluate)


def main() -> None:
    _eval()
