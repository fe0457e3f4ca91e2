"""The audit job: ``python audit.py data=<name> data.root=DIR`` (see README.md).

It builds the same data module as training (source, split), runs the whole audit of
:mod:`medrepro.datamodules.audit.data_audit` on every file of the data set, writes ``audit.json`` and
``audit.md`` into the run folder and prints a summary. A split that cannot be made
(e.g. the study's counts on a sample of the data set) does not stop the audit: the files
are audited unsplit and the reason is reported.
"""

from __future__ import annotations

import logging
import sys

import hydra
import pandas as pd
from omegaconf import DictConfig

from medrepro.core.errors import UserError
from medrepro.core.quiet import FILE_ONLY
from medrepro.datamodules.audit.audit_report import summary_lines, write_audit
from medrepro.datamodules.audit.data_audit import audit_data
from medrepro.datamodules.splitting.split import MANIFEST_COLUMNS

log = logging.getLogger(__name__)
UNSPLIT = "unsplit"
EXCLUDED = "excluded (copies with two labels)"


def audit(cfg: DictConfig) -> dict:
    """Run the audit; return it (also written to ``paths.output_dir``)."""
    datamodule = hydra.utils.instantiate(cfg.data, augment=None, _convert_="all")
    datamodule.prepare_data()
    records = datamodule.source.records()
    split_error = None
    try:
        datamodule.setup("fit")
        manifest = pd.concat([datamodule.manifest, _left_out(datamodule)], ignore_index=True)
    except UserError as error:
        split_error = str(error)
        manifest = pd.DataFrame(
            [(r.path, r.label, r.patient_id, UNSPLIT) for r in records], columns=MANIFEST_COLUMNS
        )
    settings = datamodule.duplicate_settings
    found = datamodule.file_table is not None and split_error is None
    result = audit_data(
        manifest,
        quick=False,
        workers=cfg.audit.get("workers"),
        max_pixels=datamodule.checks.pixel_limit,
        table=datamodule.file_table if found else None,
        relation=datamodule.duplicates if found else None,
        candidate_distance=int(settings.candidate_distance),
        min_similarity=float(settings.min_similarity),
    )
    settings = datamodule.split_settings
    result["conflicting_labels"] = datamodule.conflicting_labels
    result["summary"]["conflicting_label_files_excluded"] = sum(
        len(group) for group in datamodule.conflicting_labels)
    result["data"] = {
        "name": datamodule.name,
        "root": str(datamodule.root),
        "variant": datamodule.variant,
        "split_mode": settings.get("mode"),
        "group_by_patient": bool(settings.get("group_by_patient", False)),
        "group_duplicates": bool(settings.get("group_duplicates", True)),
        "split_shortfall": datamodule.split_outcome.get("shortfall", []),
        "split_error": split_error,
    }
    json_path, md_path = write_audit(result, cfg.paths.output_dir)
    print("\n".join(summary_lines(result)))
    print(f"Full report: {md_path} (and {json_path.name})")
    return result


def _left_out(datamodule) -> pd.DataFrame:
    """The copies left out for carrying two labels, as manifest rows of split
    :data:`EXCLUDED`."""
    rows = [(f["path"], f["label"], None, EXCLUDED)
            for group in datamodule.conflicting_labels for f in group]
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def run_audit(cfg: DictConfig) -> None:
    """:func:`audit`, with a user's mistake printed as one sentence (exit status 1)."""
    try:
        audit(cfg)
    except UserError as error:
        log.error("%s", error, extra={FILE_ONLY: True})  # printed below
        print(f"\nError: {error}", file=sys.stderr)
        raise SystemExit(1) from None
