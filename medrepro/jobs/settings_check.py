"""Settings checked before anything expensive runs (data, cache, model): a wrong value
stops the job with one sentence (a :class:`~medrepro.core.errors.ConfigError`)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from medrepro.core.errors import ConfigError

TEST_CHECKPOINTS = ("best", "last")


def check_settings(cfg: DictConfig) -> str:
    """Check the job's settings; return ``test_checkpoint`` (``best`` or ``last``)."""
    _check_no_missing_values(cfg)
    return _test_checkpoint_setting(cfg)


def _check_no_missing_values(cfg: DictConfig) -> None:
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        hint = " For example: python train.py data=folder data.root=/path/to/images" if "data.root" in missing else ""
        raise ConfigError(f"Set {', '.join(missing)} on the command line (required, no default).{hint}")


def _test_checkpoint_setting(cfg: DictConfig) -> str:
    """``test_checkpoint``, checked before fitting: ``best`` or ``last`` (Lightning's
    ``ckpt_path`` names for the best checkpoint by the monitored metric and the newest
    ``last.ckpt``)."""
    which = str(cfg.get("test_checkpoint", "best"))
    if which not in TEST_CHECKPOINTS:
        raise ConfigError(f"test_checkpoint must be best or last, not {which!r}.")
    return which
