"""Where the Hydra config tree is, and the resolvers it uses.

The tree is the repository's ``conf/`` folder, installed as the package data
``medrepro.conf``; the same path works in a source checkout and after ``pip install``.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

import medrepro.conf

CONFIG_DIR = Path(medrepro.conf.__file__).resolve().parent

# ${medrepro_workdir:}: the folder the command was started in (outputs/ and data/ go below it)
OmegaConf.register_new_resolver("medrepro_workdir", os.getcwd, replace=True)
# ${medrepro_not:VALUE}: the boolean negation (data.loader.persistent_workers follows
# trainer.deterministic with it)
OmegaConf.register_new_resolver("medrepro_not", lambda value: not bool(value), replace=True)
