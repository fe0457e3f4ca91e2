"""Run one benchmark task in this process and print its result as one JSON line:
``python -m benchmarks.harness.task NAME '{"argument": ...}'``.

The result carries ``peak_rss_mb``, the process's peak resident memory (``getrusage``),
so that every task's memory is measured alone.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys

TASKS = {
    "data_path": "benchmarks.harness.data_path:measure_data_path",
    "cache_memory": "benchmarks.harness.data_path:measure_cache_memory",
    "cache_build": "benchmarks.harness.cache_build:measure_cache_build",
    "lightning_loop": "benchmarks.harness.training_loop:measure_lightning",
    "plain_loop": "benchmarks.harness.training_loop:measure_plain_loop",
    "paired_loops": "benchmarks.harness.training_loop:measure_paired",
    "keras_loop": "benchmarks.harness.keras_loop:measure_keras",
}
RESULT_PREFIX = "BENCHMARK-RESULT "


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def main() -> None:
    name, arguments = sys.argv[1], json.loads(sys.argv[2])
    module, function = TASKS[name].split(":")
    result = getattr(importlib.import_module(module), function)(**arguments)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
