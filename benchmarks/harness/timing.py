"""Images per second from the moments at which the batches of a measured loop ended, by the
wall clock and by the process's CPU time (no heavy imports: the Keras process must not load
torch, nor the torch processes TensorFlow).

With one CPU thread, images per CPU second is what the wall clock would give on an idle
machine: on a shared machine other processes take turns on the cores, which stretches the
wall time of a step but not the CPU time the process itself spent. Both stacks are timed
the same way (``time.process_time``: every thread of the process, TensorFlow's own included).
"""

from __future__ import annotations

import time

# an inference round runs this many times the training round's steps: an inference step
# costs about a third of a training step, so both rounds last about as long (a round of
# under a second measures the machine's moment more than the loop)
INFERENCE_STEPS_PER_TRAINING_STEP = 3


def tick() -> tuple[float, float]:
    """Now, by the wall clock and by this process's CPU time."""
    return time.perf_counter(), time.process_time()


def images_per_second(ticks: list[tuple[float, float]], warmup: int,
                      batch_size: int) -> tuple[float, float]:
    """Images per second of wall time and per second of CPU time over the batches after the
    first ``warmup`` ones: ``ticks`` are the ends of every batch (:func:`tick`), so the
    clocks start when warm-up batch ``warmup`` has ended."""
    (wall_start, cpu_start), (wall_end, cpu_end) = ticks[warmup - 1], ticks[-1]
    images = (len(ticks) - warmup) * batch_size
    return images / (wall_end - wall_start), images / max(cpu_end - cpu_start, 1e-9)


def summary(kind: str, rounds: list[tuple[float, float]]) -> dict:
    """``<kind>_images_per_s`` and ``<kind>_images_per_cpu_s`` (the best round of each) and
    every round's figures (``<kind>_rounds``, ``<kind>_cpu_rounds``)."""
    return {f"{kind}_images_per_s": max(wall for wall, _ in rounds),
            f"{kind}_images_per_cpu_s": max(cpu for _, cpu in rounds),
            f"{kind}_rounds": [wall for wall, _ in rounds],
            f"{kind}_cpu_rounds": [cpu for _, cpu in rounds]}
