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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from medrepro.core.errors import disk_full_behind

RESULTS_JSON = "results.json"
METRICS_CSV = "metrics.csv"
PREDICTIONS_CSV = "predictions.csv"
# the validation split predicted by the tested checkpoint (columns as predictions.csv's)
VAL_PREDICTIONS_CSV = "val_predictions.csv"
SPLIT_CSV = "split.csv"
PLOTS_FOLDER = "plots"
CHECKPOINTS_FOLDER = "checkpoints"
GALLERY_FOLDER = "gallery"
REPORT_MD = "report.md"  # the run report (medrepro/jobs/report/run_report.py)
RELIABILITY_DIAGRAM_PNG = "reliability_diagram.png"  # in PLOTS_FOLDER
# a checkpoint's own section (checkpoint[CHECKPOINT_SECTION]: the run's "config", and the
# tested checkpoint's "operating_point": threshold and temperature chosen on validation)
CHECKPOINT_SECTION = "medrepro"
OPERATING_POINT_KEY = "operating_point"


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename,
    so that a reader (or a crash) never leaves half a file behind."""
    with atomic_file(path) as stream:
        stream.write(text)
    return Path(path)


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file in ``path``'s folder for writing; when the block ends without
    an error, flush it to disk and rename it to ``path`` (replacing a file, or a symbolic
    link itself, never the file a link points to). On any error (a full disk, a crash of
    the writer) the temporary file is removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
        with os.fdopen(handle, mode) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        full = disk_full_behind(error)
        if full is not None:  # name the file that did not fit (torch.save's error does not)
            raise OSError(full.errno, full.strerror, str(path)) from error
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or below it (compared as absolute paths, links not
    followed)."""
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def write_results(path: str | Path, results: dict) -> Path:
    """Write a results.json (atomically; NaN stays NaN, anything else not JSON is str())."""
    return write_atomic(path, _results_text(results))


def _results_text(results: dict) -> str:
    return json.dumps(results, indent=2, default=str, allow_nan=True)


def read_results(run_dir: str | Path) -> dict | None:
    """The run folder's results.json, or ``None`` when there is none or it is unreadable."""
    try:
        return json.loads((Path(run_dir) / RESULTS_JSON).read_text())
    except (OSError, ValueError):
        return None


def mark_failed(run_dir: str | Path, status: str, message: str, failed_at: str | None = None,
                config: dict | None = None) -> None:
    """Record in the run's results.json that it ``failed`` (or ``diverged``, or was
    ``interrupted``), why (``error``: one sentence) and at which step (``failed_at``).
    ``config`` is recorded when results.json has none yet (a job that stopped before
    training). On a full disk, where the atomic write's second copy does not fit, the file
    is rewritten in place instead: its old content's space is reused, so the record stays
    honest rather than ``running``."""
    path = Path(run_dir) / RESULTS_JSON
    results = read_results(run_dir) or {}
    if config is not None and "config" not in results:
        results["config"] = config
    results.update(status=status, error=message, finished_at=now())
    if failed_at is not None:
        results["failed_at"] = failed_at
    try:
        write_results(path, results)
    except OSError:
        if not path.is_file():
            raise
        with open(path, "r+") as stream:  # truncate, then write into the freed space
            stream.truncate(0)
            stream.write(_results_text(results))


def class_key(class_name: str) -> str:
    """A class name usable inside a metric key (``COVID-19`` -> ``covid_19``)."""
    return re.sub(r"[^0-9a-zA-Z]+", "_", class_name).strip("_").lower() or "class"


def now() -> str:
    """The current UTC time, ISO 8601 to the second (as results.json records times)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
