"""How many epochs a Lightning training checkpoint holds, read from its loop state."""

from __future__ import annotations


def epochs_ended(checkpoint: dict) -> int | None:
    """The number of epochs whose training had ended when ``checkpoint`` (the dictionary a
    Lightning ``.ckpt`` file holds) was saved: its epoch counted from 1, as metrics.csv
    counts, and the 0-based epoch at which a fit resumed from it starts. ``None`` for a
    dictionary without Lightning's loop state.

    Lightning's ``epoch`` key does not say this by itself: it counts from 0 for a checkpoint
    saved at an epoch's end but from 1 for one saved when training ended. The fit loop's
    epoch progress does: ``processed`` counts epochs whose training ended, except in a
    checkpoint saved by validation after the epoch's last batch, before that epoch's end
    was counted (``started`` is ahead and the last batch was done).
    """
    try:
        loop = checkpoint["loops"]["fit_loop"]
        progress = loop["epoch_progress"]["total"]
        ended = int(progress["processed"])
        if int(progress["started"]) > ended and loop["epoch_loop.batch_progress"].get("is_last_batch"):
            ended += 1
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    return ended


def saved_at_epoch_end(checkpoint: dict) -> bool:
    """Whether a Lightning training checkpoint was saved once its epoch had ended (at the
    training epoch's end, or when training ended), not by validation before the epoch's end
    (validation less often than once per epoch) or in the middle of an epoch."""
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["total"]
        return int(progress["processed"]) == int(progress["started"])
    except (KeyError, TypeError, ValueError):
        return False
