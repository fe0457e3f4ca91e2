"""The record a data source yields for every image file."""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One image on disk.

    ``label`` is the class name (a folder name); ``patient_id`` is parsed from the file
    name where the data set encodes one (else ``None``); ``given_split`` is the split
    the data set's own layout puts the file in (``train``/``val``/``test``), if any.
    """

    path: str
    label: str
    patient_id: str | None = None
    given_split: str | None = None
