"""``medrepro-predict ckpt_path=FILE inputs=DIR_OR_FILE_OR_GLOB [predict.saliency=true]``
(``python predict.py`` in the repository): classify new images with a trained model (see
README.md, "Using a trained model")."""

import hydra
from omegaconf import DictConfig

from medrepro.core.config_tree import CONFIG_DIR
from medrepro.core.quiet import quiet_library_output
from medrepro.jobs.job_runner import run_job
from medrepro.jobs.prediction import predict


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def _predict(cfg: DictConfig) -> None:
    quiet_library_output()
    run_job(cfg, job=predict)


def main() -> None:
    _predict()
