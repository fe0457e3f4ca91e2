"""The repository the benchmark runs in (the benchmarks are not installed with medrepro)."""

from pathlib import Path

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
