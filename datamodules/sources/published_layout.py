"""Find a published data set inside the folder a user points ``data.root`` at.

Downloaded archives unpack in more than one way (``chest_xray/chest_xray/...``,
``brain_tumor_dataset/`` beside top-level copies), so a data set lists where its class
folders may start, relative to ``data.root``, and the first place that holds them is
taken. When none does, the user gets one sentence: where to get the data set, what
layout is expected, and the demo data set to run instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medrepro.core.errors import DataError
from medrepro.core.records import SPLITS
from medrepro.datamodules.sources.folder import IGNORED_FOLDERS

ANY_FOLDER = "*"


@dataclass(frozen=True)
class PublishedLayout:
    """What a data set looks like on disk and where users get it.

    Args:
        title: the data set's name as its users know it.
        get_it: how to get it, a phrase that goes on with "so that DIR exists"
            (e.g. "Download it from <Kaggle page> and unzip it").
        class_names: the class folders that must all be there.
        folder_layout: ``class_folders`` (the class folders at the start), ``split_folders``
            (in ``train/``, ``val/`` or ``test/`` there) or ``auto`` (either).
        nestings: where the layout may start, relative to ``data.root``, tried in order
            (``""`` is ``data.root`` itself; a ``*`` part stands for any one folder).
        demo: the demo data set to suggest, e.g. ``demo_pneumonia``.
    """

    title: str
    get_it: str
    class_names: Sequence[str]
    folder_layout: str = "auto"
    nestings: Sequence[str] = ("",)
    demo: str = "demo_cardiomegaly"

    def locate(self, root: str | Path) -> Path:
        """The folder where the layout starts, or a :class:`DataError` saying what to do."""
        root = Path(root).expanduser()
        for nesting in self.nestings:
            for start in _expand(root, nesting):
                if self._holds_classes(start):
                    return start
        raise self.error(root)

    def _holds_classes(self, start: Path) -> bool:
        prefixes = {"class_folders": [""], "split_folders": list(SPLITS)}.get(
            self.folder_layout, ["", *SPLITS]
        )
        return any(
            all((start / prefix / name).is_dir() for name in self.class_names)
            for prefix in prefixes
        )

    def error(self, root: Path) -> DataError:
        """The sentence for a missing ``root`` or one without this layout."""
        wanted = [f"{self._expected_start()}{name}" for name in self.class_names]
        advice = f"{self.get_it} so that {root}/{wanted[0]} exists, or run with data={self.demo}."
        if not root.is_dir():
            return DataError(f"{self.title} not found at {root}. {advice}")
        found = ", ".join(visible_folder_names(root)) or "no sub-folders"
        return DataError(
            f"{self.title} at {root} does not have the expected layout "
            f"({' and '.join(wanted)}; found {found}). {advice}"
        )

    def _expected_start(self) -> str:
        """The first place the class folders may be, relative to ``data.root``, as
        ``a/b/`` (``""`` for ``data.root`` itself)."""
        parts = [p for p in self.nestings[0].split("/") if p] if self.nestings else []
        if self.folder_layout == "split_folders":
            parts.append(SPLITS[0])
        return "".join(f"{p}/" for p in parts)


def _expand(root: Path, nesting: str) -> list[Path]:
    """The folders ``nesting`` names below ``root`` (several when it has a ``*`` part)."""
    starts = [root]
    for part in (p for p in nesting.split("/") if p):
        if part == ANY_FOLDER:
            starts = [s / name for s in starts if s.is_dir() for name in visible_folder_names(s)]
        else:
            starts = [s / part for s in starts]
    return starts


def visible_folder_names(folder: Path) -> list[str]:
    """Sub-folder names, without hidden ones and macOS archive debris, sorted."""
    return sorted(
        p.name for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name not in IGNORED_FOLDERS
    )
