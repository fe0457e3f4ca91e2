"""Choices on the command line that need the optional ``scale`` extra (launchers, the
hyper-parameter search, loggers): when its packages are not installed, one sentence that
says how to install them, instead of Hydra's "Could not find 'hydra/launcher/joblib'" or an
import error in the middle of a job."""

from __future__ import annotations

import importlib.util
import shutil
import sys

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

INSTALL = "pip install -e '.[scale]'"  # in the repository; medrepro[scale] once installed

# (config group, choice) -> the modules that choice imports
NEEDS = {
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher",),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    ("hparams_search", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("logger", "tensorboard"): ("tensorboard",),
    ("logger", "mlflow"): ("mlflow",),
    ("logger", "many"): ("tensorboard", "mlflow"),
}

SLURM_LAUNCHERS = {("hydra/launcher", "slurm"), ("hydra/launcher", "submitit_slurm")}


def missing_feature_sentence(arguments: list[str]) -> str | None:
    """The sentence for the first choice in ``arguments`` whose packages are missing, else
    ``None``."""
    overrides = [argument for argument in arguments if "=" in argument and not argument.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return None  # Hydra reports a malformed override itself
    for override in parsed:
        value = override.value()
        if not isinstance(value, str):
            continue
        modules = NEEDS.get((override.key_or_group, value), ())
        missing = [module for module in modules if not _installed(module)]
        if missing:
            return (f"{override.key_or_group}={value} needs {', '.join(missing)}, which is not "
                    f"installed: run {INSTALL} (the optional 'scale' extra) and try again.")
        if (override.key_or_group, value) in SLURM_LAUNCHERS and shutil.which("srun") is None:
            return (f"hydra/launcher={value} submits the jobs to SLURM, but SLURM's srun is not on "
                    "this machine: run the command on a SLURM login node, or try the same sweep "
                    "here with hydra/launcher=submitit_local.")
    return None


def refuse_missing_features(arguments: list[str]) -> None:
    """Print ``Error: <sentence>`` and exit with status 1 when a choice needs packages that
    are not installed."""
    sentence = missing_feature_sentence(arguments)
    if sentence:
        print(f"Error: {sentence}", file=sys.stderr)
        raise SystemExit(1)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
