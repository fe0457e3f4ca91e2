"""Remember the quick audit facts of each file between runs.

The check before training hashes every file of the split. A sweep trains many jobs on the
same files, so the facts are kept in one JSON file (in the image cache folder), keyed by
path, size and modification time: a job re-reads only the files that are new or changed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medrepro.core.run_folder import write_atomic

FILENAME = "file_facts.json"
VERSION = 1


def file_key(path: str) -> str:
    """``path|size|mtime_ns``, or the path alone when the file cannot be stat-ed."""
    try:
        stat = os.stat(path)
    except OSError:
        return path
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


class FileFactsStore:
    """Facts (``FileFacts.as_dict()``) by :func:`file_key`, loaded from and saved to
    ``folder/file_facts.json``; a missing or unreadable store is simply empty."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / FILENAME
        self.facts: dict[str, dict] = {}
        try:
            stored = json.loads(self.path.read_text())
            if stored.get("version") == VERSION:
                self.facts = stored["facts"]
        except (OSError, ValueError, KeyError, AttributeError):
            self.facts = {}

    def save(self) -> None:
        """Write atomically (temporary file, then rename): concurrent jobs never see half a
        file; the last writer wins, which is harmless since facts depend only on the file."""
        write_atomic(self.path, json.dumps({"version": VERSION, "facts": self.facts}))
