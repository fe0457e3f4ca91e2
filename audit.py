"""Audit a data set before training on it: `python audit.py data=NAME data.root=DIR` (see README.md)."""

import hydra
from omegaconf import DictConfig

import medrepro.resolvers  # noqa: F401  (registers ${medrepro_root:})
from medrepro.auditing import run_audit


@hydra.main(version_base="1.3", config_path="conf", config_name="audit")
def main(cfg: DictConfig) -> None:
    run_audit(cfg)


if __name__ == "__main__":
    main()
