"""The run folder's contract: the names of the files a run writes, how they are written
(atomically), how a failed run is recorded, and how a class name appears in metric keys.

Every writer (the callbacks) and every reader (resume, the report) takes these names from
here, so the two sides cannot drift apart.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

RESULTS_JSON = "results.json"
METRICS_CSV = "metrics.csv"
PREDICTIONS_CSV = "predictions.csv"
SPLIT_CSV = "split.csv"
PLOTS_FOLDER = "plots"
CHECKPOINTS_FOLDER = "checkpoints"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename,
    so that a reader (or a crash) never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_results(path: str | Path, results: dict) -> Path:
    """Write a results.json (atomically; NaN stays NaN, anything else not JSON is str())."""
    return write_atomic(path, json.dumps(results, indent=2, default=str, allow_nan=True))


def read_results(run_dir: str | Path) -> dict | None:
    """The run folder's results.json, or ``None`` when there is none or it is unreadable."""
    try:
        return json.loads((Path(run_dir) / RESULTS_JSON).read_text())
    except (OSError, ValueError):
        return None


def mark_failed(run_dir: str | Path, status: str, message: str) -> None:
    """Record in the run's results.json that it ``failed`` (or ``diverged``) and why."""
    results = read_results(run_dir) or {}
    results.update(status=status, error=message, finished_at=now())
    write_results(Path(run_dir) / RESULTS_JSON, results)


def class_key(class_name: str) -> str:
    """A class name usable inside a metric key (``COVID-19`` -> ``covid_19``)."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", class_name).strip("_").lower() or "class"


def now() -> str:
    """The current UTC time, ISO 8601 to the second (as results.json records times)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
