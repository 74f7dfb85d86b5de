"""The import graph of the installed package `agnostic_rt`, as import-linter and grimp must see it.

pyproject's package-dir maps folders that are not under agnostic_rt/ into the package (backends/ is
agnostic_rt.backends, passes/ is agnostic_rt.passes, ...). grimp finds a package by walking the one
folder importlib reports for it, so on a source checkout it would see agnostic_rt/ alone and miss
those subpackages. `installed_tree` lays the package out as a wheel would (symlinks into the
checkout), and the contracts run against that tree.

Run as a script (`make arch`) it checks the import-linter contracts in pyproject.toml:
    python tests/import_graph.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "agnostic_rt"


def package_dirs() -> dict[str, Path]:
    """pyproject's package-dir: package name -> its folder in the checkout."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def installed_tree(dest: Path) -> Path:
    """Lay out `agnostic_rt` under `dest` as installed (symlinks into the checkout); returns `dest`."""
    dirs = package_dirs()
    pkg = dest / PACKAGE
    pkg.mkdir(parents=True)
    for entry in dirs.pop(PACKAGE).iterdir():
        if entry.name != "__pycache__":
            (pkg / entry.name).symlink_to(entry)
    for name, folder in dirs.items():
        parent, _, leaf = name.rpartition(".")
        if parent != PACKAGE:
            raise ValueError(f"package-dir maps {name!r}: only direct subpackages of {PACKAGE} are laid out")
        (pkg / leaf).symlink_to(folder)
    return dest


def materialise(tree: Path, subpackage: str) -> Path:
    """Replace a symlinked subpackage of `tree` by a copy, so a test can add modules to it."""
    path = tree.joinpath(*subpackage.split("."))
    target = path.resolve()
    path.unlink()
    shutil.copytree(target, path, ignore=shutil.ignore_patterns("__pycache__"))
    return path


def lint_imports(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the import-linter CLI with pyproject's contracts over the package laid out in `tree`."""
    cli = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", cli, str(ROOT / "pyproject.toml"), "--no-cache", "--no-logo", *args],
        cwd=tree,  # import-linter puts the working directory first on sys.path
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
    )


_DUMP = """
import json, grimp
g = grimp.build_graph("agnostic_rt", cache_dir=None)
print(json.dumps({"modules": sorted(g.modules), "imports": [
    [m, d, x["line_number"], x["line_contents"]]
    for m in sorted(g.modules) for d in sorted(g.find_modules_directly_imported_by(m))
    for x in g.get_import_details(importer=m, imported=d)]}))
"""


def module_graph():
    """The grimp graph of agnostic_rt's modules and their direct imports (line numbers included).

    Built in a fresh interpreter: importlib (and so grimp) resolves a package already imported here to
    the checkout's agnostic_rt/ folder rather than to the installed tree.
    """
    import grimp

    with tempfile.TemporaryDirectory() as tmp:
        tree = installed_tree(Path(tmp))
        out = subprocess.run(
            [sys.executable, "-c", _DUMP], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
            capture_output=True, text=True, check=True,
        ).stdout
    dump = json.loads(out)
    graph = grimp.ImportGraph()
    for module in dump["modules"]:
        graph.add_module(module)
    for importer, imported, line, contents in dump["imports"]:
        graph.add_import(importer=importer, imported=imported, line_number=line, line_contents=contents)
    return graph


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        result = lint_imports(installed_tree(Path(tmp)))
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
