"""Remember the quick audit facts of each file between runs.

The check before training hashes every file of the split, and decodes it once when there
is no image cache. A sweep trains many jobs on the same files, so the facts are kept in one
JSON file (in the image cache folder), keyed by path, size and modification time: a job
re-reads only the files that are new or changed. The store is an optimisation: where its
folder cannot be written (``data.cache.enabled=false`` with a read-only ``data.cache.dir``),
nothing is remembered and every run reads the files again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from medrepro.core.run_folder import write_atomic

log = logging.getLogger(__name__)
FILENAME = "file_facts.json"
VERSION = 2  # 2: facts with perceptual and pixel hashes, near-duplicate pair scores


def file_key(path: str) -> str:
    """``path|size|mtime_ns``, or the path alone when the file cannot be stat-ed."""
    try:
        stat = os.stat(path)
    except OSError:
        return path
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


class FileFactsStore:
    """Facts (``FileFacts.as_dict()``) by :func:`file_key`, the keys of files that decoded
    (``decoded``) and the pixel similarity of near-duplicate candidates (``pairs``, by the
    two files' keys joined with a newline), loaded from and saved to
    ``folder/file_facts.json``; a missing, unreadable or older store is simply empty."""

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / FILENAME
        self.facts: dict[str, dict] = {}
        self.decoded: set[str] = set()
        self.pairs: dict[str, float] = {}
        try:
            stored = json.loads(self.path.read_text())
            if stored.get("version") == VERSION:
                self.facts = stored["facts"]
                self.decoded = set(stored.get("decoded", []))
                self.pairs = dict(stored.get("pairs", {}))
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            self.facts, self.decoded, self.pairs = {}, set(), {}

    def save(self) -> None:
        """Write atomically (temporary file, then rename): concurrent jobs never see half a
        file; the last writer wins, which is harmless since facts depend only on the file.
        A folder that cannot be written is skipped (logged)."""
        text = json.dumps({"version": VERSION, "facts": self.facts,
                           "decoded": sorted(self.decoded), "pairs": self.pairs})
        try:
            write_atomic(self.path, text)
        except OSError as error:
            log.info("Not remembering the file checks in %s (%s); the next run checks the "
                     "files again.", self.path.parent, error)
