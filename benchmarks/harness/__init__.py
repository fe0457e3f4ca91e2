"""``python benchmark.py``: the data path, the training loop, inference and memory of
medrepro, each measured beside its plain alternative, and (``--against keras``) medrepro
beside Keras 3 on TensorFlow, the studies' own stack (see README.md, "Performance").

Every measurement runs in its own Python process (:mod:`benchmarks.harness.task`),
so that its peak resident memory is its own.
"""
