"""Hyper-parameter search (``hparams_search=optuna``, conf/hparams_search/): Hydra's
Optuna sweeper, continued where it stopped (:mod:`medrepro.jobs.search.optuna_sweeper`)."""
