"""Every third-party module the library imports is a declared dependency, and stages keep
to their own layer (loading data imports no segmentation code, nor torch)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "xjointseg"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_norm(re.split(r"[<>=!~\[; ]", d)[0]) for d in meta["dependencies"]}
    for extra in meta["optional-dependencies"].values():
        declared |= {_norm(re.split(r"[<>=!~\[; ]", d)[0]) for d in extra}
    dists = packages_distributions()
    missing = {}
    for path in PACKAGE.rglob("*.py"):
        for module in _imports(path):
            if module in sys.stdlib_module_names or module in ("xjointseg", "__future__"):
                continue
            names = {_norm(d) for d in dists.get(module, [module])}
            if not names & declared:
                missing.setdefault(module, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_sentinel2_does_not_import_segmentation_code():
    for path in (PACKAGE / "sentinel2").rglob("*.py"):
        text = path.read_text()
        for name in ("engine", "segment", "_dask", "_blocks", "models", "torch", "cube"):
            assert not re.search(rf"^\s*(from|import)\s+[.]*{name}\b", text, re.M), (path, name)
            assert not re.search(rf"^\s*from\s+\.\.{name}\b", text, re.M), (path, name)


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (
                node.level or "xjointseg" in (node.module or "")
            ):
                private = [a.name for a in node.names if a.name.startswith("_")]
                # a package may import its own private submodules (xjointseg.sentinel2._load)
                if private and not (node.module or "").startswith("_") and node.module:
                    offenders.append((str(path.relative_to(ROOT)), node.module, private))
    assert not offenders, offenders


def test_import_and_data_loading_do_not_import_torch():
    """torch (seconds to import, GBs with CUDA) loads with the first model, not before."""
    code = (
        "import sys, xjointseg, xjointseg.sentinel2, xjointseg.cube, xjointseg.change\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "xjointseg.load_model\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_readme_layout_names_every_module():
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :].split("\n## ", 1)[0]
    missing = [
        p.name + ("/" if p.is_dir() else "")
        for p in sorted(PACKAGE.iterdir())
        if not p.name.startswith(("__", ".")) and p.name != "py.typed"
        if p.name + ("/" if p.is_dir() else "") not in layout
    ]
    missing += [
        f"{folder}/{p.name}"
        for folder in ("benchmarks", "scripts")
        for p in sorted((ROOT / folder).glob("*.py"))
        if p.name not in layout
    ]
    assert not missing, f"README Layout does not name {missing}"
