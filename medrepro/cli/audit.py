"""``medrepro-audit data=NAME data.root=DIR`` (``python audit.py`` in the repository):
audit a data set before training on it (see README.md)."""

import hydra
from omegaconf import DictConfig

from medrepro.core.config_tree import CONFIG_DIR
from medrepro.core.quiet import quiet_library_output
from medrepro.jobs.auditing import run_audit


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="audit")
def main(cfg: DictConfig) -> None:
    quiet_library_output()
    run_audit(cfg)
