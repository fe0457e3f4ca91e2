"""``medrepro-cache [overrides]`` (``python -m medrepro.cli.cache`` in the repository):
pre-process every image of a data config into the decoded-image cache ahead of training,
with a progress bar (see README.md, "Performance")."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import hydra
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from medrepro.core.config_tree import CONFIG_DIR
from medrepro.core.errors import user_error_behind
from medrepro.core.quiet import quiet_library_output


def main(argv: Sequence[str] | None = None) -> int:
    """``medrepro-cache [overrides]``: build the image cache of a data config."""
    quiet_library_output()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    overrides = list(sys.argv[1:] if argv is None else argv)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.data.cache.enabled = True
    try:
        datamodule = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
        datamodule.prepare_data()
        datamodule.setup("fit")
        cache = datamodule.build_cache(progress=True)
    except Exception as raised:
        error = user_error_behind(raised)
        if error is None:
            raise
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(f"{len(cache)} images cached in {cache.array_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
