"""``medrepro-export ckpt_path=FILE format=onnx|torchscript`` (``python export.py`` in the
repository): a trained model as one file that runs without medrepro, plus model.json
(see README.md)."""

import hydra
from omegaconf import DictConfig

from medrepro.core.config_tree import CONFIG_DIR
from medrepro.core.quiet import quiet_library_output
from medrepro.jobs.model_export import run_export


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def _export(cfg: DictConfig) -> None:
    quiet_library_output()
    run_export(cfg)


def main() -> None:
    _export()
