"""Data keys given on the command line under their names from before the data config was
grouped (``data.num_workers=2``): one sentence that names the new key, instead of Hydra's
"Key 'num_workers' is not in struct" and its advice to append the key with ``+`` (which the
data module would then refuse)."""

from __future__ import annotations

import sys

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from medrepro.jobs.settings_check import renamed_key_sentence


def refuse_renamed_keys(arguments: list[str]) -> None:
    """Print ``Error: <sentence>`` and exit with status 1 when an override in ``arguments``
    (the command line, as Hydra will read it) uses an old data key."""
    overrides = [argument for argument in arguments if "=" in argument and not argument.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return  # Hydra reports a malformed override itself
    for argument, override in zip(overrides, parsed):
        key = override.key_or_group
        if override.is_delete() or (key == "data.cache" and isinstance(override.value(), dict)):
            continue  # data.cache={...}: the group that replaced the old switch
        sentence = renamed_key_sentence(key, argument.split("=", 1)[1])
        if sentence:
            print(f"Error: {sentence}", file=sys.stderr)
            raise SystemExit(1)
