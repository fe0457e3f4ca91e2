"""How DataLoader worker processes are started.

Inside a job of a ``hydra/launcher=joblib`` sweep the process is one of joblib's loky
workers, whose default start method is loky's own: a plain ``multiprocessing`` process
(what a DataLoader starts) then fails to start ("'Process' object has no attribute
'env'"). The loaders therefore name a standard start method: the interpreter's usual one
where it is standard, else ``fork`` on Linux and ``spawn`` elsewhere.
"""

from __future__ import annotations

import multiprocessing
import sys

STANDARD_START_METHODS = ("fork", "spawn", "forkserver")


def worker_start_context():
    """The ``multiprocessing_context`` of a DataLoader with workers (``None``: the default,
    where it is a standard start method)."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method is None or method in STANDARD_START_METHODS:
        return None
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
