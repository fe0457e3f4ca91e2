"""Benchmark medrepro's data path, training loop, inference and memory against plain
alternatives: `python benchmark.py [--quick] [--out FILE]` (see README.md, "Performance")."""

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from benchmarks.harness.report import add_derived_figures, format_report
from benchmarks.harness.runner import Settings, run_benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a run of about a minute")
    parser.add_argument("--out", default="benchmark.json", help="where to write the results")
    parser.add_argument("--model", help="timm model of the training benchmark")
    parser.add_argument("--image-size", type=int, help="training benchmark image size")
    parser.add_argument("--batch-size", type=int, help="training benchmark batch size")
    options = parser.parse_args()
    changes = {f.name: getattr(options, f.name) for f in fields(Settings)
               if getattr(options, f.name, None) is not None}
    settings = Settings.quick(**changes) if options.quick else Settings(**changes)
    results = add_derived_figures(run_benchmark(settings, log=lambda m: print(m, file=sys.stderr)))
    print(format_report(results))
    Path(options.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nResults written to {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
