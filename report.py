"""`python report.py SWEEP_DIR [--resamples N]`: see README.md (installed: `medrepro-report`)."""

import sys

from medrepro.cli.report import main

if __name__ == "__main__":
    sys.exit(main())
