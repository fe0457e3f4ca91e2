"""OmegaConf resolvers used by the config tree."""

from pathlib import Path

from omegaconf import OmegaConf

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]

OmegaConf.register_new_resolver("medrepro_root", lambda: str(REPOSITORY_ROOT), replace=True)
