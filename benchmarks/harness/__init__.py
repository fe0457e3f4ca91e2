"""``python benchmark.py``: the data path, the training loop, inference and memory of
medrepro, each measured beside its plain alternative (see README.md, "Performance").

Every measurement runs in its own Python process (:mod:`benchmarks.harness.task`),
so that its peak resident memory is its own.
"""
