"""Errors a user can cause and fix: they stop a run with one clear sentence, no stack trace."""

import errno
import os
import re


class UserError(Exception):
    """A mistake in the user's data, files or configuration.

    The message is a complete sentence that says what is wrong and what to do about it;
    the entry scripts print it alone, without a traceback.
    """


class DataError(UserError):
    """The data on disk does not match what the configuration expects."""


class ConfigError(UserError):
    """A configuration value is invalid or contradicts another one."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite (e.g. a learning rate that is too high)."""


def user_error_behind(error: BaseException | None) -> UserError | None:
    """The :class:`UserError` that caused ``error``, if any (Hydra and Lightning wrap
    errors raised while instantiating or inside a DataLoader worker)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# errno of "the disk (or the user's quota) is full"; EDQUOT is missing on some platforms
DISK_FULL_ERRNOS = frozenset(
    number for number in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if number is not None
)
# how a disk-full OSError reads once a DataLoader worker re-raised it as text
_DISK_FULL_TEXT = re.compile(
    r"\[Errno (" + "|".join(str(n) for n in sorted(DISK_FULL_ERRNOS)) + r")\] "
    r"[^:\n]+(?:: '([^'\n]*)'(?: -> '([^'\n]*)')?)?"
)


def disk_full_behind(error: BaseException | None) -> OSError | None:
    """The ``OSError`` with errno ENOSPC or EDQUOT (no space left, disk quota exceeded) that
    caused ``error``, if any: the error itself, a cause or context of it (a library that
    wrapped it), or an error whose message quotes one (a DataLoader worker re-raises its
    error as text). A quoted one is returned as a new ``OSError`` with the quoted file names."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return error
        quoted = _DISK_FULL_TEXT.search(str(error))
        if quoted:
            number, filename, destination = int(quoted.group(1)), quoted.group(2), quoted.group(3)
            return OSError(number, os.strerror(number), filename, None, destination)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
