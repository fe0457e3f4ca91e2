"""The installed package's shape: one namespace, layers that only import downward, no
private names imported across modules, nothing that refers to ../shared."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO

# where each part of the medrepro namespace lives in the repository
FOLDERS = {
    "medrepro": REPO / "medrepro",
    "medrepro.datamodules": REPO / "datamodules",
    "medrepro.callbacks": REPO / "callbacks",
    "medrepro.lightning_modules": REPO / "lightning_modules",
    "medrepro.conf": REPO / "conf",
}
# bottom (0) to top: a module may import its own group and the groups below it only
# (groups of one layer may import each other only in the bottom layer: the data modules and
# the LightningModules know nothing of each other)
LAYERS = [
    ("medrepro.core", "medrepro.conf", "medrepro.statistics"),
    ("medrepro.datamodules", "medrepro.lightning_modules"),
    ("medrepro.callbacks",),
    ("medrepro.jobs",),
    ("medrepro.cli",),
]
BARE_NAMES = ("datamodules", "callbacks", "lightning_modules")


def _modules() -> dict[str, Path]:
    modules = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            if package == "medrepro" and path.relative_to(folder).parts[0] in {
                "datamodules", "callbacks", "lightning_modules", "conf"
            }:
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = _modules()


def _group(module: str) -> tuple[int, str] | None:
    for rank, groups in enumerate(LAYERS):
        for group in groups:
            if module == group or module.startswith(group + "."):
                return rank, group
    return None


def _imports(path: Path, module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) of every import, also inside functions."""
    found = []
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


def test_the_layout_maps_every_code_folder_into_medrepro():
    assert {"medrepro.core.errors", "medrepro.datamodules.classification_datamodule",
            "medrepro.callbacks.results_json", "medrepro.lightning_modules.image_classifier",
            "medrepro.jobs.training", "medrepro.cli.train"} <= set(MODULES)
    unplaced = [name for name in MODULES if name != "medrepro" and _group(name) is None
                and name != "medrepro.__init__"]
    assert unplaced == [], f"modules outside every layer: {unplaced}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_look_down_and_take_no_private_names(module):
    path = MODULES[module]
    own = _group(module)
    problems = []
    for imported, names, line in _imports(path, module):
        top = imported.split(".")[0]
        if top in BARE_NAMES:
            problems.append(f"line {line}: bare `{imported}` (import medrepro.{imported})")
            continue
        if any(part.startswith("_") and not part.startswith("__") for part in imported.split(".")):
            problems.append(f"line {line}: private module `{imported}`")
        if imported.startswith("medrepro"):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"line {line}: private name(s) {private} of `{imported}`")
            target = _group(imported)
            crosses = own is not None and target is not None and target[1] != own[1]
            if crosses and (target[0] > own[0] or (target[0] == own[0] and own[0] > 0)):
                problems.append(f"line {line}: `{imported}` is not below {own[1]}")
    assert problems == [], f"{module}: " + "; ".join(problems)


def test_nothing_in_the_package_refers_to_the_shared_folder():
    offenders = [name for name, path in MODULES.items()
                 if "shared/data" in path.read_text() or '"shared"' in path.read_text()]
    offenders += [str(p.relative_to(REPO)) for p in (REPO / "conf").rglob("*.yaml")
                  if "../shared" in p.read_text()]
    assert offenders == []
