"""Benchmark medrepro's data path, training loop, inference and memory against plain
alternatives, and the cache build with 1 and N worker processes: `python benchmark.py
[--quick] [--out FILE]`; only the cache build: `python benchmark.py --cache-build`; the
duplicate grouping of many images: `python benchmark.py --grouping [--images N]`; the
calibration of the copy threshold on the real sample images: `python benchmark.py
--similarity`; medrepro beside Keras 3 (TensorFlow), the studies' own stack: `python
benchmark.py --against keras [--model inception_v3|xception|vgg16] [--image-size N]`
(see README.md, "Performance")."""

import argparse
import json
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from benchmarks.harness.paths import REPOSITORY_ROOT
from benchmarks.harness.report import add_derived_figures, format_report
from benchmarks.harness.runner import Settings, machine, run_benchmark
from medrepro.core.errors import UserError

SAMPLE_DATA = REPOSITORY_ROOT.parent / "shared" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="a run of about a minute (with --grouping: 2,000 images)")
    parser.add_argument("--out", default="benchmark.json",
                        help="where to write the results (--grouping and --similarity add "
                             "theirs to the file's other figures)")
    parser.add_argument("--model", help="timm model of the training benchmark")
    parser.add_argument("--image-size", type=int, help="training benchmark image size")
    parser.add_argument("--batch-size", type=int, help="training benchmark batch size")
    parser.add_argument("--rounds", type=int,
                        help="rounds of the training benchmark and of --against (best counts)")
    parser.add_argument("--against", choices=["keras"],
                        help="only medrepro beside Keras 3 on TensorFlow (the bench extra): "
                             "training and inference, float32 and each side's default "
                             "precision; --model inception_v3 (default), xception or vgg16; "
                             "--image-size (default 224, 96 with --quick)")
    parser.add_argument("--threads", type=int,
                        help="CPU threads of both stacks with --against (default 1)")
    parser.add_argument("--grouping", action="store_true",
                        help="only the duplicate grouping of many generated images")
    parser.add_argument("--images", type=int,
                        help="distinct images of --grouping (default 20,000)")
    parser.add_argument("--similarity", action="store_true",
                        help="only the copy threshold's calibration on ../shared/data")
    parser.add_argument("--cache-build", action="store_true",
                        help="only the cache build's images per second with 1 worker process "
                             "and with one per core")
    options = parser.parse_args()
    if options.against:
        try:
            return against_keras(options)
        except UserError as error:
            print(error, file=sys.stderr)
            return 1
    if options.cache_build:
        return cache_build(options)
    if options.grouping or options.similarity:
        try:
            return duplicates(options)
        except UserError as error:
            print(error, file=sys.stderr)
            return 1
    changes = {f.name: getattr(options, f.name) for f in fields(Settings)
               if getattr(options, f.name, None) is not None}
    settings = Settings.quick(**changes) if options.quick else Settings(**changes)
    results = add_derived_figures(run_benchmark(settings, log=lambda m: print(m, file=sys.stderr)))
    print(format_report(results))
    Path(options.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nResults written to {options.out}")
    return 0


def duplicates(options: argparse.Namespace) -> int:
    """--grouping and --similarity: print their tables and add their figures (with the
    machine's) to the JSON file ``--out``, keeping what else it holds."""
    from benchmarks.harness.grouping import format_grouping, measure_grouping
    from benchmarks.harness.similarity import format_similarity, measure_similarity

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    count = options.images or (2000 if options.quick else 20000)
    if options.grouping and count < 2:
        raise UserError(f"--images must be at least 2, not {count}.")
    host = machine()  # the load average before the measurements
    load = host["load_average"][0] if host["load_average"] else None
    figures, tables = {}, [f"Machine: {host['cpu']}, {host['cores']} cores; torch {host['torch']}; "
                           "load average at start " + ("n/a" if load is None else f"{load:.1f}")]
    if options.similarity:
        figures["similarity"] = measure_similarity(SAMPLE_DATA, log=log)
        tables.append(format_similarity(figures["similarity"]))
    if options.grouping:
        with tempfile.TemporaryDirectory(prefix="medrepro-grouping-") as scratch:
            figures["grouping"] = measure_grouping(Path(scratch), count, log=log)
        tables.append(format_grouping(figures["grouping"]))
    out = Path(options.out)
    results = _existing(out)
    for name, value in figures.items():
        results[name] = {"machine": host, **value}
    print("\n\n".join(tables))
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nResults written to {out} ({', '.join(figures)})")
    return 0


def against_keras(options: argparse.Namespace) -> int:
    """--against keras: print the comparison and add it to the JSON file ``--out`` (under
    ``against_keras``, one entry per model and image size), keeping what else it holds."""
    from benchmarks.harness.against_keras import (
        KerasComparison,
        format_against_keras,
        run_against_keras,
    )

    changes = {f.name: getattr(options, f.name) for f in fields(KerasComparison)
               if getattr(options, f.name, None) is not None}
    settings = (KerasComparison.quick(**changes) if options.quick
                else KerasComparison(**changes))
    figures = run_against_keras(settings, log=lambda m: print(m, file=sys.stderr))
    print(format_against_keras(figures))
    out = Path(options.out)
    results = _existing(out)
    key = f"{figures['settings']['model']}_{figures['settings']['image_size']}px"
    results.setdefault("against_keras", {})[key] = figures
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nResults written to {out} (against_keras: {key})")
    return 0


def cache_build(options: argparse.Namespace) -> int:
    """--cache-build: print the cache build's figures and add them (with the machine's) to
    the JSON file ``--out``, keeping what else it holds."""
    from benchmarks.harness.report import format_cache_build
    from benchmarks.harness.runner import measure_cache_building

    host = machine()  # the load average before the measurements
    load = host["load_average"][0] if host["load_average"] else None
    settings = Settings.quick() if options.quick else Settings()
    with tempfile.TemporaryDirectory(prefix="medrepro-cache-build-") as scratch:
        build = measure_cache_building(settings, Path(scratch),
                                       log=lambda m: print(m, file=sys.stderr))
    print(f"Machine: {host['cpu']}, {host['cores']} cores; load average at start "
          + ("n/a" if load is None else f"{load:.1f}") + "\n\n" + format_cache_build(build))
    out = Path(options.out)
    results = _existing(out)
    results["cache_build"] = {"machine": host, **build}
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nResults written to {out} (cache_build)")
    return 0


def _existing(out: Path) -> dict:
    """The results already in ``out`` (another mode's), or none."""
    try:
        results = json.loads(out.read_text())
    except (OSError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


if __name__ == "__main__":
    sys.exit(main())
