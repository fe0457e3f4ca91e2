"""The step a training job is at, so that a job that stops says where: ``train()`` marks
each step with :func:`enter_step`, and :func:`~medrepro.jobs.job_runner.run_job` records
the step it stopped in as ``failed_at`` in results.json (the sweep report shows it)."""

from __future__ import annotations

from contextvars import ContextVar

# results.json's ``failed_at`` value -> how the report and the error messages say it
STEPS = {
    "settings_check": "during the settings check",
    "data_loading": "while loading the data",
    "model_building": "while building the model",
    "data_check": "during the pre-training data check",
    "training": "during training",
    "validation": "while validating the tested checkpoint",
    "testing": "during testing",
}
FIRST_STEP = "settings_check"

_current: ContextVar[str] = ContextVar("medrepro_job_step", default=FIRST_STEP)


def enter_step(step: str) -> None:
    """Mark the start of ``step`` (a key of :data:`STEPS`)."""
    if step not in STEPS:
        raise ValueError(f"Unknown job step {step!r}; expected one of {', '.join(STEPS)}.")
    _current.set(step)


def current_step() -> str:
    """The step last entered (the first step until another is entered)."""
    return _current.get()


def describe_step(step: str | None) -> str:
    """``during training`` for ``training``; an unknown or missing step says so."""
    if step is None:
        return "at a step that was not recorded"
    return STEPS.get(step, f"at step {step!r}")
