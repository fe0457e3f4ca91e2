"""The Hydra config tree (YAML files), installed as ``medrepro.conf``."""
