"""Keep the console to what a medrepro user acts on: the metric table, the run folder,
errors, and medrepro's own messages.

Libraries print a few lines a user can do nothing about. :func:`quiet_library_output`
(called first by every command in :mod:`medrepro.cli`) drops exactly those, each matched by
its message and the module that emits it; every other warning and log line stays:

* torch's ``FutureWarning`` that ``isinstance(treespec, LeafSpec)`` is deprecated, raised
  inside Lightning (``pytorch_lightning/utilities/_pytree.py``) on every fit, validate and test;
* Lightning's advertising tips (``💡 Tip: ... litlogger`` / ``litmodels``);
* Lightning's ``Trainer(limit_train_batches=1) was configured so ...`` lines, which repeat
  the ``trainer.limit_*`` values the user set (and which results.json records);
* Lightning's model summary saying it does not know ``bf16-mixed`` (it sizes the parameters
  at 32 bits instead), on every run with the CPU default precision.

:data:`FILE_ONLY` marks a log record for the job's log file only (see
:class:`HideFileOnlyRecords`): a message the command also prints to stderr as
``Error: ...`` is then shown once.
"""

from __future__ import annotations

import logging
import re
import warnings

# (message regex, category, module regex) of the library warnings that are dropped
LIBRARY_WARNINGS = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"(pytorch_lightning|lightning\.pytorch)\.utilities\._pytree",
    ),
    # eval.py tests a checkpoint in a trainer without the training's checkpoint callback,
    # which testing does not need
    (
        r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
        UserWarning,
        r"(pytorch_lightning|lightning\.pytorch)\.trainer\.call",
    ),
    # Lightning's model summary sizes parameters by precision and knows no bf16-mixed (the
    # default on CPUs with native bfloat16): it falls back to 32 bits and says so every run
    (
        r"Precision \S+ is not supported by the model summary",
        UserWarning,
        r"(pytorch_lightning|lightning\.pytorch)\.utilities\.model_summary",
    ),
    # DDP: the epoch metrics are torchmetrics, synchronised across processes when computed
    (
        r"It is recommended to use `self\.log\('(train|val|test)/.*sync_dist=True",
        UserWarning,
        r"(pytorch_lightning|lightning\.pytorch)\.trainer\.connectors\.logger_connector\.result",
    ),
)
# the loggers through which Lightning's rank_zero_info writes, and the messages dropped there
LIGHTNING_INFO_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)
LIGHTNING_NOISE = re.compile(
    r"💡 Tip: .*\[lit(logger|models)\]"
    r"|`Trainer\(limit_(train|val|test|predict)_batches=[0-9.]+\)` was configured so "
)
# extra={FILE_ONLY: True}: the record goes to the log file, not to the console
FILE_ONLY = "medrepro_file_only"


class DropLightningNoise(logging.Filter):
    """Drops Lightning's advertising tips and ``Trainer(limit_*=...) was configured``
    lines; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not LIGHTNING_NOISE.match(record.getMessage())


class HideFileOnlyRecords(logging.Filter):
    """For the console handler (``conf/hydra/default.yaml``): hides records logged with
    ``extra={FILE_ONLY: True}``, which the command prints itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, FILE_ONLY, False)


_LIGHTNING_FILTER = DropLightningNoise()


def quiet_library_output() -> None:
    """Install the warning filters and the Lightning log filter (idempotent; it can run
    before or after Lightning is imported, as long as it runs before training)."""
    for message, category, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _LIGHTNING_FILTER not in logger.filters:
            logger.addFilter(_LIGHTNING_FILTER)
