"""Training and inference throughput of the studies' own stack: a Keras 3 application model
on the TensorFlow backend, as the studies' notebooks built it, from scratch.

``keras.applications.<Model>(weights=None, include_top=True, classes=2,
classifier_activation=None)`` on ``input_shape=(size, size, channels)``, compiled with
Keras's Adam (its defaults: learning rate 0.001, epsilon 1e-7) and sparse categorical
cross-entropy on the logits, and Keras's default ``jit_compile="auto"`` (which leaves XLA
off on a CPU). ``precision`` ``float32`` is Keras's default policy, ``bf16`` its
``mixed_bfloat16`` policy. Training is ``train_on_batch`` and inference
``predict_on_batch`` on one fixed batch of uniform random pixels (the compute does not
depend on the values), so Keras reads no data at all; the times are taken as
:mod:`benchmarks.harness.training_loop` takes them (the end of every batch; ``warmup``
batches first; inference times three times as many steps). TensorFlow gets ``threads`` intra-op and inter-op threads, as torch gets
``threads`` threads.

This module imports no torch: it runs in a process of its own
(``python -m benchmarks.harness.task keras_loop ...``) with ``KERAS_BACKEND=tensorflow``.
"""

from __future__ import annotations

import os

from benchmarks.harness.timing import (
    INFERENCE_STEPS_PER_TRAINING_STEP,
    images_per_second,
    summary,
    tick,
)

# medrepro's model name (timm) -> the keras.applications model the studies used
KERAS_APPLICATIONS = {"inception_v3": "InceptionV3", "legacy_xception": "Xception",
                      "vgg16": "VGG16"}
KERAS_POLICIES = {"float32": "float32", "bf16": "mixed_bfloat16"}


def measure_keras(model_name: str, image_size: int, batch_size: int, channels: int, steps: int,
                  warmup: int, rounds: int, precision: str, threads: int) -> dict:
    """Images per second of Keras training and inference (best of ``rounds``)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    # before TensorFlow starts its runtime, i.e. before any model exists
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras
    import numpy as np

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"Keras runs on {keras.backend.backend()}, not on TensorFlow")
    keras.mixed_precision.set_global_policy(KERAS_POLICIES[precision])
    keras.utils.set_random_seed(0)
    application = getattr(keras.applications, KERAS_APPLICATIONS[model_name])
    model = application(weights=None, include_top=True, input_shape=(image_size, image_size,
                        channels), classes=2, classifier_activation=None)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001, epsilon=1e-7),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    images = rng.random((batch_size, image_size, image_size, channels), dtype=np.float32)
    labels = rng.integers(0, 2, batch_size)
    def timed(step, steps_timed: int) -> tuple[float, float]:
        ticks = []
        for _ in range(warmup + steps_timed):
            step()  # returns numbers (the loss, the logits): the step has ended
            ticks.append(tick())
        return images_per_second(ticks, warmup, batch_size)

    train, infer = [], []
    for _ in range(rounds):
        train.append(timed(lambda: model.train_on_batch(images, labels), steps))
        infer.append(timed(lambda: model.predict_on_batch(images),
                           steps * INFERENCE_STEPS_PER_TRAINING_STEP))
    return {"loop": "keras", **summary("train", train), **summary("inference", infer),
            "precision": precision, "policy": KERAS_POLICIES[precision],
            "threads": threads, "parameters": int(model.count_params()),
            "jit_compile": bool(getattr(model, "jit_compile", False)),
            "versions": {"keras": keras.__version__, "tensorflow": tf.__version__},
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)")}
