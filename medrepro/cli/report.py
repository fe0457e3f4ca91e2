"""`medrepro-report FOLDER` (`python report.py FOLDER` in the repository): write the report of a sweep or of one run (see README.md).

For a multirun folder: reads its run folders (results.json, metrics.csv, predictions.csv,
val_predictions.csv, split.csv) and writes summary.md, summary.csv and figures into it.
For one run folder (it holds results.json): writes its report.md again. Never re-runs
anything.
"""

import argparse
import sys
from pathlib import Path

from medrepro.core.errors import UserError
from medrepro.core.run_folder import RESULTS_JSON
from medrepro.jobs.report.run_report import write_run_report
from medrepro.jobs.report.summary import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", metavar="FOLDER",
                        help="a multirun folder, e.g. outputs/<task>/multiruns/<time>, or one "
                             "run folder (it holds results.json)")
    parser.add_argument("--resamples", type=int, default=1000,
                        help="bootstrap resamples of the test patients (default 1000)")
    args = parser.parse_args(argv)
    try:
        if (Path(args.sweep_dir) / RESULTS_JSON).is_file():
            path = write_run_report(args.sweep_dir, resamples=args.resamples)
        else:
            path = write_report(args.sweep_dir, resamples=args.resamples)
    except UserError as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    print(f"Report: {path}")
    return 0


