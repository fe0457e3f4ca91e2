"""The commands: ``python train.py`` in the repository, or the console scripts
``medrepro-train``, ``medrepro-audit``, ``medrepro-report`` and ``medrepro-cache`` from any
folder once medrepro is installed."""
