"""Errors a user can cause and fix: they stop a run with one clear sentence, no stack trace."""


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
