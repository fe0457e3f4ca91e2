"""``medrepro-audit data=NAME data.root=DIR`` (``python audit.py`` in the repository):
audit a data set before training on it (see README.md)."""

import sys

import hydra
from omegaconf import DictConfig

from medrepro.cli.renamed_keys import refuse_renamed_keys
from medrepro.core.config_tree import CONFIG_DIR
from medrepro.core.quiet import quiet_library_output
from medrepro.jobs.auditing import run_audit


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="audit")
def _audit(cfg: DictConfig) -> None:
    quiet_library_output()
    run_audit(cfg)


def main() -> None:
    refuse_renamed_keys(sys.argv[1:])  # one sentence instead of Hydra's "not in struct"
    _audit()
