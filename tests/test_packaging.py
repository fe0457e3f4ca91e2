"""The distribution: the wheel holds one import package, medrepro, with the repository's
folders at their mapped places and the four console scripts; installed from that wheel into a
fresh environment, the commands run from any folder; and [project.dependencies] declares
exactly the third-party packages medrepro's code imports or its configs name.

The wheel is built once per module, offline (``pip wheel --no-deps --no-build-isolation
--no-index``), with setuptools' build folders in a temporary folder (``DIST_EXTRA_CONFIG``):
a stale ``build/lib`` in the repository would otherwise end up in the wheel."""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from conftest import REPO, TINY_RUN

# repository folder -> its place in the installed medrepro package
MAPPED = {
    "medrepro": "medrepro",
    "datamodules": "medrepro/datamodules",
    "callbacks": "medrepro/callbacks",
    "lightning_modules": "medrepro/lightning_modules",
    "conf": "medrepro/conf",
    "hydra_plugins": "hydra_plugins",
}
NOT_INSTALLED = ("callbacks", "datamodules", "lightning_modules", "conf", "tests", "benchmarks")
CONSOLE_SCRIPTS = {"medrepro-train", "medrepro-audit", "medrepro-report", "medrepro-cache",
                   "medrepro-eval", "medrepro-predict", "medrepro-export"}


@pytest.fixture(scope="module")
def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _source_files(folder: str, suffix: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob(f"*{suffix}") if "__pycache__" not in p.parts)


def _wheel_place(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).parts
    return "/".join([MAPPED[folder], *rest])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("wheel_build")
    (build / "setup.cfg").write_text(
        f"[build]\nbuild_base = {build / 'build'}\n[egg_info]\negg_base = {build}\n"
    )
    out = build / "dist"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", ".", "-w", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "DIST_EXTRA_CONFIG": str(build / "setup.cfg")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("medrepro-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel_names(wheel) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_installs_one_import_package(wheel_names):
    """medrepro, and the search's sweeper in Hydra's plugin namespace (only there does
    Hydra instantiate a sweeper): hydra_plugins stays a namespace package (no
    ``__init__.py`` of ours), so other plugins installed beside it still load."""
    tops = {name.split("/")[0] for name in wheel_names}
    assert {top for top in tops if not top.endswith((".dist-info", ".data"))} == {"medrepro", "hydra_plugins"}
    assert {name.split("/")[1] for name in wheel_names if name.startswith("hydra_plugins/")} == {"medrepro_search"}
    assert "hydra_plugins/__init__.py" not in wheel_names
    assert not tops & set(NOT_INSTALLED)


def test_the_wheel_holds_every_module_and_config_at_its_mapped_place(wheel_names):
    folders = ("medrepro", "datamodules", "callbacks", "lightning_modules", "hydra_plugins")
    modules = [p for folder in folders for p in _source_files(folder, ".py")]
    configs = _source_files("conf", ".yaml")
    assert len(configs) > 40 and REPO / "conf" / "train.yaml" in configs
    expected = {_wheel_place(p) for p in [*modules, *configs, REPO / "conf" / "__init__.py"]}
    missing = sorted(expected - wheel_names)
    assert not missing, f"not in the wheel: {missing[:5]}"
    # and nothing else: no module the repository no longer has (a stale build folder)
    extra = sorted(n for n in wheel_names - expected if n.endswith((".py", ".yaml")))
    assert not extra, f"in the wheel but not in the repository: {extra[:5]}"


def test_the_console_scripts_are_the_commands(wheel, wheel_names):
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        parser.read_string(archive.read(entry_points).decode())
    scripts = dict(parser["console_scripts"])
    assert set(scripts) == CONSOLE_SCRIPTS
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert function == "main" and module.replace(".", "/") + ".py" in wheel_names


def test_every_config_target_of_medrepro_is_in_the_wheel(wheel_names):
    targets = {m for p in _source_files("conf", ".yaml")
               for m in re.findall(r"_target_:\s*(medrepro\.[\w.]+)", p.read_text())}
    assert targets
    for target in targets:
        module = target.rsplit(".", 1)[0].replace(".", "/")
        assert f"{module}.py" in wheel_names or f"{module}/__init__.py" in wheel_names, target


# --------------------------------------------------------------------------- installed


def _fresh_environment(root: Path, wheel: Path) -> Path:
    """A new virtual environment with medrepro installed from ``wheel`` only; the
    third-party packages come from this interpreter's site-packages, through a .pth line
    (a directory named in a .pth file is put on sys.path, but the .pth files inside it, such
    as the development install's ``__editable__`` finder, are not run)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=300)
    python = root / "bin" / "python"
    fresh_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(fresh_site) / "dependencies_from_the_test_environment.pth").write_text("\n".join(sorted(ours)) + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
         "-q", str(wheel)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "bin"


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MEDREPRO_DATA_DIR", "MEDREPRO_CACHE_DIR", "VIRTUAL_ENV")}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=env, check=False)


@pytest.mark.slow
def test_the_installed_commands_run_from_any_folder(tmp_path, wheel):
    bin_dir = _fresh_environment(tmp_path / "fresh", wheel)
    for script in CONSOLE_SCRIPTS:  # pip's entry-point scripts, for the fresh interpreter
        assert (bin_dir / script).read_text().startswith(f"#!{bin_dir / 'python'}")
    anywhere = tmp_path / "anywhere"
    anywhere.mkdir()

    probe = ("import json, sys, medrepro, medrepro.conf, medrepro.datamodules; "
             "print(json.dumps([medrepro.__file__, medrepro.conf.__file__, "
             "medrepro.datamodules.__file__, [type(f).__name__ for f in sys.meta_path]]))")
    where = _run([str(bin_dir / "python"), "-c", probe], anywhere)
    assert where.returncode == 0, where.stderr
    *files, finders = json.loads(where.stdout)
    for file in files:
        assert Path(file).is_relative_to(tmp_path / "fresh"), file
    assert not any("editable" in name.lower() for name in finders)

    tiny = [*TINY_RUN, "model.name=test_resnet", "~callbacks.run_plots"]
    train = _run([str(bin_dir / "medrepro-train"), "-m", "data=demo_pneumonia", *tiny,
                  "hydra.callbacks.sweep_report.enabled=false"], anywhere)
    assert train.returncode == 0, train.stderr[-3000:]
    (sweep,) = (anywhere / "outputs" / "train" / "multiruns").iterdir()
    results = json.loads((sweep / "0" / "results.json").read_text())
    assert results["status"] == "completed"
    assert (sweep / "0" / "train.log").is_file()
    assert any((anywhere / "data" / "demo").iterdir())

    demo_data = [o for o in TINY_RUN if o.startswith("data.source.")]
    audit = _run([str(bin_dir / "medrepro-audit"), "data=demo_pneumonia", *demo_data], anywhere)
    assert audit.returncode == 0, audit.stderr[-3000:]
    (audit_dir,) = (anywhere / "outputs" / "audit" / "runs").iterdir()
    assert json.loads((audit_dir / "audit.json").read_text())["data"]["name"] == "demo_pneumonia"
    assert (audit_dir / "audit.log").is_file()

    report = _run([str(bin_dir / "medrepro-report"), str(sweep), "--resamples", "50"], anywhere)
    assert report.returncode == 0, report.stderr[-3000:]
    assert (sweep / "summary.md").is_file() and f"Report: {sweep / 'summary.md'}" in report.stdout

    cache = _run([str(bin_dir / "medrepro-cache"), "data=demo_pneumonia", *demo_data,
                  "data.image_size=80"], anywhere)
    assert cache.returncode == 0, cache.stderr[-3000:]
    assert f"cached in {anywhere / 'data' / 'cache'}" in cache.stdout


# --------------------------------------------------------------------------- dependencies


# the import names of the bench extra (python benchmark.py --against keras) -> the
# distribution that provides each
BENCH_IMPORTS = {"keras": "keras", "tensorflow": "tensorflow-cpu"}


def _distribution(requirement: str) -> str:
    """PEP 503 normalised name of a requirement string."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _third_party_imports(files: list[Path], local: set[str]) -> dict[str, Path]:
    """top-level module -> one file importing it, for every non-stdlib, non-local import."""
    found: dict[str, Path] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in local:
                    found.setdefault(top, path)
    return found


def _distributions_of(modules: dict[str, Path]) -> dict[str, tuple[set[str], str]]:
    """module -> (the installed distributions that provide it, where it is used)."""
    owners = packages_distributions()
    found = {}
    for module, path in modules.items():
        assert module in owners, f"{module} (used in {path}) belongs to no installed distribution"
        found[module] = ({_distribution(d) for d in owners[module]}, str(path.relative_to(REPO)))
    return found


def _undeclared(needed: dict[str, tuple[set[str], str]], declared: set[str]) -> dict[str, str]:
    """module -> where it is used, for modules that no declared distribution provides (one
    is enough: cv2 comes from opencv-python-headless or opencv-python)."""
    return {module: where for module, (owners, where) in needed.items() if not owners & declared}


def _package_needs() -> dict[str, tuple[set[str], str]]:
    folders = ("medrepro", "datamodules", "callbacks", "lightning_modules", "hydra_plugins")
    files = [p for folder in folders for p in _source_files(folder, ".py")]
    modules = _third_party_imports(files, {"medrepro"})
    for config in _source_files("conf", ".yaml"):  # what Hydra imports for the configs
        for target in re.findall(r"_target_:\s*([\w.]+)", config.read_text()):
            top = target.split(".")[0]
            if top != "medrepro" and top not in sys.stdlib_module_names:
                modules.setdefault(top, config)
    return _distributions_of(modules)


def test_the_declared_dependencies_are_exactly_what_the_package_uses(pyproject):
    """Everything the package imports or names is a dependency, or belongs to the optional
    ``scale`` extra (launchers, the search, loggers: imported only when used)."""
    declared = {_distribution(r) for r in pyproject["project"]["dependencies"]}
    scale = {_distribution(r) for r in pyproject["project"]["optional-dependencies"]["scale"]}
    needed = _package_needs()
    assert _undeclared(needed, declared | scale) == {}, "used but not in dependencies nor the scale extra"
    used = set().union(*(owners for owners, _ in needed.values()))
    assert declared - used == set(), "declared but never imported nor named as a _target_"


def test_the_tests_and_benchmarks_need_only_declared_and_dev_packages(pyproject):
    files = [*_source_files("tests", ".py"), *_source_files("benchmarks", ".py"), REPO / "benchmark.py"]
    local = {"medrepro", "benchmarks", "conftest", *(p.stem for p in _source_files("tests", ".py"))}
    extras = pyproject["project"]["optional-dependencies"]
    # dev includes medrepro[scale]; bench (Keras, TensorFlow) is the --against keras benchmark's
    declared = {_distribution(r) for r in [*pyproject["project"]["dependencies"], *extras["dev"],
                                           *extras["scale"], *extras["bench"]]}
    modules = _third_party_imports(files, local)
    # make test does not install the bench extra: where its modules are absent, the extra
    # must declare the distribution that provides them (the benchmark says how to install it)
    installed = packages_distributions()
    bench = {_distribution(r) for r in extras["bench"]}
    for module, distribution in BENCH_IMPORTS.items():
        if module in modules and module not in installed:
            assert distribution in bench, f"{module} needs {distribution} in the bench extra"
            del modules[module]
    assert _undeclared(_distributions_of(modules), declared) == {}
