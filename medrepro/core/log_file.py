"""The job's log file (``train.log``, ``audit.log``; configured in ``conf/hydra/default.yaml``)."""

from __future__ import annotations

import logging
import sys

from medrepro.core.errors import DISK_FULL_ERRNOS


class JobLogFile(logging.FileHandler):
    """A :class:`logging.FileHandler` that stops writing once the disk is full, instead of
    printing ``--- Logging error ---`` and a traceback to the console for every later record:
    the job itself reports the full disk, in one sentence. Any other error is reported as
    :class:`logging.FileHandler` reports it."""

    disk_full = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.disk_full:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            self.disk_full = True
            return
        super().handleError(record)
