"""Find a published data set inside the folder a user points ``data.root`` at.

Downloaded archives unpack in more than one way (``chest_xray/chest_xray/...``,
``brain_tumor_dataset/`` beside top-level copies), so a source lists where its layout may
start, relative to ``data.root``, and takes the first one that holds every required
sub-folder. When none does, the user gets one sentence: where to download the data set,
what layout is expected, and the demo data set to run instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medrepro.core.errors import ConfigError, DataError
from medrepro.core.records import ImageRecord
from medrepro.datamodules.sources.folder import FolderSource

log = logging.getLogger(__name__)

IGNORED_FOLDERS = ("__MACOSX",)


@dataclass(frozen=True)
class PublishedLayout:
    """What a data set looks like on disk and where users get it.

    Args:
        title: the data set's name as its users know it.
        get_it: how to get it, a phrase that goes on with "so that DIR exists"
            (e.g. "Download it from <Kaggle page> and unzip it").
        required: sub-folders, relative to the layout's start, that must all exist
            (e.g. ``("train/NORMAL", "train/PNEUMONIA")``).
        nestings: where the layout may start, relative to ``data.root``, tried in order
            (``""`` is ``data.root`` itself).
        demo: the demo data set to suggest, e.g. ``demo_pneumonia``.
    """

    title: str
    get_it: str
    required: Sequence[str]
    nestings: Sequence[str] = ("",)
    demo: str = "demo_cardiomegaly"

    def locate(self, root: str | Path) -> Path:
        """The folder where the layout starts, or a :class:`DataError` saying what to do."""
        root = Path(root).expanduser()
        for nesting in self.nestings:
            start = root / nesting if nesting else root
            if all((start / part).is_dir() for part in self.required):
                return start
        raise self.error(root)

    def records(
        self,
        root: str | Path,
        folder_layout: str,
        class_names: Sequence[str],
        patient_id_regex: str | None,
    ) -> list[ImageRecord]:
        """Locate the layout below ``root`` and scan it as class (or split) folders."""
        start = self.locate(root)
        if start != Path(root).expanduser():
            log.info("reading the %s at %s", self.title, start)
        folders = FolderSource(
            start, layout=folder_layout, class_names=list(class_names),
            patient_id_regex=patient_id_regex,
        )
        return folders.records()

    def error(self, root: Path) -> DataError:
        """The sentence for a missing ``root`` or one without this layout."""
        expected = f"{root}/{self.required[0]}"
        advice = (
            f"{self.get_it} so that {expected} exists, or run with data={self.demo}."
        )
        if not root.is_dir():
            return DataError(f"{self.title} not found at {root}. {advice}")
        found = ", ".join(visible_folder_names(root)) or "no sub-folders"
        wanted = " and ".join(self.required)
        return DataError(
            f"{self.title} at {root} does not have the expected layout ({wanted}; "
            f"found {found}). {advice}"
        )


def from_kaggle(page: str) -> str:
    """The ``get_it`` phrase of a Kaggle data set."""
    return f"Download it from {page} and unzip it"


def visible_folder_names(folder: Path) -> list[str]:
    """Sub-folder names, without hidden ones and macOS archive debris, sorted."""
    return sorted(
        p.name for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_FOLDERS
    )


def check_fixed_layout(layout: str, fixed: str, option: str) -> None:
    """Sources of published data sets know their layout; ``data.source.layout`` (shared
    with ``data=folder``) may only confirm it."""
    if layout not in ("auto", fixed):
        raise ConfigError(
            f"{option} always has the layout {fixed}; remove data.source.layout={layout}."
        )
