"""Settings that several configs and modules use are each defined in exactly one file of
the config tree and the package (issue 10: one home for each setting)."""

from __future__ import annotations

import re
from dataclasses import asdict

from conftest import REPO

from medrepro.datamodules.transforms.local_phase import EnhParams

PACKAGE_FOLDERS = ("conf", "datamodules", "callbacks", "lightning_modules", "medrepro")


def files_matching(pattern: str) -> set[str]:
    """The config and package files (relative paths) in which ``pattern`` occurs."""
    regex = re.compile(pattern)
    return {
        str(path.relative_to(REPO))
        for folder in PACKAGE_FOLDERS
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".yaml") and regex.search(path.read_text(encoding="utf-8"))
    }


def test_the_pneumonia_patient_id_regex_is_defined_once():
    assert files_matching(re.escape(r"NORMAL2-IM-\d+")) == {"conf/data/patient_ids/kaggle_pneumonia.yaml"}


def test_each_enh_default_is_defined_once():
    for name, value in asdict(EnhParams()).items():
        assignment = rf"\b{name}\b[^\n]*[:=]\s*{re.escape(repr(value))}\b"
        assert files_matching(assignment) == {"datamodules/transforms/local_phase.py"}, name
