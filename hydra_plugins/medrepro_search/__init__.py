"""The sweeper of ``hparams_search=optuna`` where Hydra looks for it: Hydra instantiates a
sweeper only from the ``hydra_plugins`` package. The code is
:mod:`medrepro.jobs.search.optuna_sweeper`; without the optional ``scale`` extra
(hydra-optuna-sweeper) this package defines nothing, so Hydra's plugin scan stays quiet."""

try:
    from medrepro.jobs.search.optuna_sweeper import ContinuableOptunaSweeper
except ImportError:  # the scale extra is not installed: no search (train.py says so)
    pass
else:

    class OptunaSearchSweeper(ContinuableOptunaSweeper):
        """:class:`~medrepro.jobs.search.optuna_sweeper.ContinuableOptunaSweeper`."""
