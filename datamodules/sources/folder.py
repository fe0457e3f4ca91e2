"""Generic class-per-folder data source.

Two layouts are understood (``layout="auto"`` picks the one present):

* ``class_folders``: ``ROOT/<class>/<image>`` (splits are made by medrepro);
* ``split_folders``: ``ROOT/{train,val,test}/<class>/<image>`` (the data set's own split
  is kept as ``given_split``; ``split.mode=given`` uses it).

Images may sit in sub-folders of a class folder. Hidden files and folders and macOS
archive debris (``__MACOSX``) are ignored. A patient id is parsed from each file name
with ``patient_id_regex`` (first capturing group, or the whole match); files it does not
match are their own patient.

With ``class_names``, a folder of images beside the named class folders is not dropped
silently: ``other_folders="stop"`` (``data=folder``) stops with one sentence naming it,
``"warn"`` (the published data sets, whose archives hold other folders) logs it.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from medrepro.core.errors import DataError
from medrepro.core.records import SPLITS, ImageRecord
from medrepro.datamodules.transforms.image_reader import IMAGE_EXTENSIONS, is_image_file

log = logging.getLogger(__name__)
LAYOUTS = ("auto", "class_folders", "split_folders")
IGNORED_FOLDERS = ("__MACOSX",)
OTHER_FOLDERS = ("stop", "warn")


class FolderSource:
    """Yield one :class:`ImageRecord` per image below ``root``."""

    def __init__(
        self,
        root: str | Path,
        layout: str = "auto",
        class_names: list[str] | None = None,
        patient_id_regex: str | None = None,
        other_folders: str = "stop",
    ) -> None:
        if layout not in LAYOUTS:
            raise DataError(f"data.layout must be one of {', '.join(LAYOUTS)}, not '{layout}'.")
        if other_folders not in OTHER_FOLDERS:
            raise ValueError(f"other_folders must be one of {OTHER_FOLDERS}, not {other_folders!r}")
        self.other_folders = other_folders
        self.root = Path(root).expanduser()
        self.layout = layout
        self.class_names = list(class_names) if class_names else None
        self.patient_pattern = _compile_regex(patient_id_regex)

    def prepare(self) -> None:
        """Nothing to download or generate for a folder on disk."""

    def records(self) -> list[ImageRecord]:
        self._check_root()
        layout = self._detect_layout()
        if layout == "split_folders":
            present = [s for s in SPLITS if (self.root / s).is_dir()]
            records = [r for s in present for r in self._scan_classes(self.root / s, s)]
        else:
            records = self._scan_classes(self.root, None)
        return sorted(records, key=lambda r: r.path)

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise DataError(
                f"Data folder not found at {self.root}. Set data.root to a folder with one "
                "sub-folder of images per class (or train/, val/ and test/ each holding one "
                "sub-folder per class), or run with data=demo_cardiomegaly."
            )

    def _detect_layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        has_split_folders = any((self.root / s).is_dir() for s in SPLITS)
        return "split_folders" if has_split_folders else "class_folders"

    def _scan_classes(self, folder: Path, split: str | None) -> list[ImageRecord]:
        found = sorted(p.name for p in _visible_subfolders(folder))
        names = self.class_names or found
        where = f"{folder}" if split is None else f"{folder} (split '{split}')"
        missing = [n for n in names if n not in found]
        if missing:
            raise DataError(
                f"Class folder(s) {', '.join(missing)} not found in {where}; it holds "
                f"{', '.join(found) or 'no folders'}. Fix data.root or data.class_names."
            )
        if len(names) < 2:
            raise DataError(
                f"Only {len(names)} class folder ({', '.join(names) or 'none'}) found in {where}; "
                "a classifier needs at least two classes, one sub-folder each."
            )
        self._check_other_folders(folder, where, [n for n in found if n not in names], names)
        records = []
        for name in names:
            files = sorted(p for p in (folder / name).rglob("*") if _is_kept_image(p, folder))
            if not files:
                raise DataError(
                    f"Class folder {folder / name} contains no images "
                    f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder."
                )
            records += [ImageRecord(str(p), name, self._patient_id(p), split) for p in files]
        return records

    def _check_other_folders(self, folder: Path, where: str, others: list[str],
                             names: list[str]) -> None:
        """A folder of images that ``data.class_names`` does not name: stop or log."""
        with_images = {name: _count_images(folder / name, folder) for name in others}
        with_images = {name: n for name, n in with_images.items() if n}
        if not with_images:
            return
        listed = ", ".join(f"{name} ({n} images)" for name, n in with_images.items())
        if self.other_folders == "warn":
            log.warning("Ignoring %s in %s: not in data.class_names (%s).", listed, where,
                        ", ".join(names))
            return
        one = len(with_images) == 1
        it = "it" if one else "them"
        raise DataError(
            f"The folder{'' if one else 's'} {listed} in {where} "
            f"{'is' if one else 'are'} not in data.class_names ({', '.join(names)}); add "
            f"{it} to data.class_names to train on {it}, or move {it} out of {folder} to "
            f"leave {it} out."
        )

    def _patient_id(self, path: Path) -> str | None:
        if self.patient_pattern is None:
            return None
        match = self.patient_pattern.search(path.name)
        if match is None:
            return None
        groups = [g for g in match.groups() if g is not None]
        return groups[0] if groups else match.group(0)


def _visible_subfolders(folder: Path) -> list[Path]:
    return [
        p for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_FOLDERS
    ]


def _count_images(folder: Path, base: Path) -> int:
    return sum(1 for p in folder.rglob("*") if _is_kept_image(p, base))


def _is_kept_image(path: Path, base: Path) -> bool:
    parts = path.relative_to(base).parts
    hidden = any(p.startswith(".") or p in IGNORED_FOLDERS for p in parts)
    return not hidden and path.is_file() and is_image_file(path)


def _compile_regex(pattern: str | None) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as error:
        raise DataError(f"data.patient_id_regex '{pattern}' is not a valid regex ({error}).") from None
