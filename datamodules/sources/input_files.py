"""The files ``predict.py inputs=...`` names: a folder (every image file below it, in the
formats the training reader takes), one file, or a glob pattern (``'scans/**/*.dcm'``)."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

from medrepro.core.errors import ConfigError
from medrepro.datamodules.transforms.image_reader import IMAGE_EXTENSIONS, is_image_file

GLOB_CHARACTERS = "*?["


def input_files(inputs: str | Sequence[str] | None, setting: str = "inputs") -> list[str]:
    """Every file ``inputs`` names (one entry or a list of them), sorted, without repeats.
    A folder gives the image files below it; a file is taken as it is (a file that does not
    decode is reported by the reader, not here); a pattern gives the files it matches."""
    if inputs is None or inputs == "" or (not isinstance(inputs, str) and not list(inputs)):
        raise ConfigError(f"{setting} is required: pass {setting}=FOLDER, {setting}=FILE or a "
                          f"pattern such as {setting}='scans/*.png'.")
    entries = [inputs] if isinstance(inputs, str) else [str(entry) for entry in inputs]
    found: dict[str, None] = {}
    for entry in entries:
        for path in _files_of(entry, setting):
            found.setdefault(path)
    return list(found)


def _files_of(entry: str, setting: str) -> list[str]:
    path = Path(entry).expanduser()
    if any(character in entry for character in GLOB_CHARACTERS) and not path.exists():
        matches = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not matches:
            raise ConfigError(f"{setting}={entry}: the pattern matches no file; check the path "
                              "(quote the pattern so that the shell does not expand it).")
        return matches
    if path.is_dir():
        images = sorted(str(p) for p in path.rglob("*") if p.is_file() and is_image_file(p))
        if not images:
            raise ConfigError(f"{setting}={entry}: the folder holds no image files "
                              f"({', '.join(IMAGE_EXTENSIONS)}).")
        return images
    if path.is_file():
        return [str(path)]
    raise ConfigError(f"{setting}={entry}: no such file or folder.")
