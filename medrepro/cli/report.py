"""`medrepro-report SWEEP_DIR` (`python report.py SWEEP_DIR` in the repository): write the report of a sweep (see README.md).

Reads the run folders of a multirun (results.json, metrics.csv, predictions.csv) and
writes summary.md, summary.csv and figures into SWEEP_DIR. Never re-runs anything.
"""

import argparse
import sys

from medrepro.core.errors import UserError
from medrepro.jobs.report.summary import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. outputs/<task>/multiruns/<time>")
    parser.add_argument("--resamples", type=int, default=1000,
                        help="bootstrap resamples of the test images (default 1000)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.sweep_dir, resamples=args.resamples)
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(f"Report: {path}")
    return 0


