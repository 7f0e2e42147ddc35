"""Check the built distributions against the source tree: ``python .ci/check_wheel.py [DIST_DIR]``.

The wheel must hold every file of ``src/ghostfacenets`` (modules, the shipped configs, the service's static files,
any data file added later) and nothing else of the package, with the version of ``ghostfacenets.__version__``, the
``ghostfacenets`` command, the licence file and the README as description; the sdist must hold the same package
files plus the tests, the documentation and the change log. Prints what it counted; exits 1 with every problem
listed otherwise. Reads the files only: nothing is imported from the source tree or the wheel.
"""

from __future__ import annotations

import ast
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "ghostfacenets"
SOURCE = ROOT / "src" / PACKAGE
SDIST_EXTRAS = (
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "pyproject.toml",
    "tests/helpers/__init__.py",
    "docs/training.md",
)


def source_files() -> set[str]:
    """Paths of the package's files relative to ``src/``, without byte-code caches."""
    return {
        path.relative_to(SOURCE.parent).as_posix()
        for path in SOURCE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo")
    }


def source_version() -> str:
    """``__version__`` of ``src/ghostfacenets/__init__.py``, read as text."""
    tree = ast.parse((SOURCE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise SystemExit("src/ghostfacenets/__init__.py sets no __version__")


def one(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"{dist}: expected one {pattern}, found {[p.name for p in found]}")
    return found[0]


def compare(what: str, expected: set[str], present: set[str], problems: list[str]) -> None:
    for name in sorted(expected - present):
        problems.append(f"{what} lacks {name}")
    for name in sorted(present - expected):
        problems.append(f"{what} holds {name}, which is not in src/{PACKAGE}")


def check_wheel(wheel: Path, expected: set[str], version: str, problems: list[str]) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"{PACKAGE}-{version}.dist-info"
        compare("the wheel", expected, {n for n in names if n.startswith(f"{PACKAGE}/")}, problems)
        if f"{info}/METADATA" not in names:
            problems.append(f"the wheel has no {info}/METADATA (is its version {version}?)")
            return
        metadata = HeaderParser().parsestr(archive.read(f"{info}/METADATA").decode())
        entry_points = archive.read(f"{info}/entry_points.txt").decode() if f"{info}/entry_points.txt" in names else ""
    expectations = {
        "Name": PACKAGE,
        "Version": version,
        "License-Expression": "MIT AND Apache-2.0",
        "Description-Content-Type": "text/markdown",
    }
    for field, value in expectations.items():
        if metadata.get(field) != value:
            problems.append(f"wheel METADATA {field}: {metadata.get(field)!r}, expected {value!r}")
    if str(metadata.get_payload()).strip() != (ROOT / "README.md").read_text().strip():
        problems.append("wheel METADATA: the long description is not README.md")
    if f"{info}/licenses/LICENSE" not in names:
        problems.append(f"the wheel lacks {info}/licenses/LICENSE")
    if f"{PACKAGE} = {PACKAGE}.cli:main" not in entry_points:
        problems.append("the wheel does not declare the ghostfacenets command")


def check_sdist(sdist: Path, expected: set[str], version: str, problems: list[str]) -> None:
    top = f"{PACKAGE}-{version}"
    with tarfile.open(sdist) as archive:
        names = {m.name.removeprefix(f"{top}/") for m in archive.getmembers() if m.isfile()}
    package = {n.removeprefix("src/") for n in names if n.startswith(f"src/{PACKAGE}/")}
    compare("the sdist", expected, package, problems)
    for name in (*SDIST_EXTRAS, "PKG-INFO"):
        if name not in names:
            problems.append(f"the sdist lacks {name}")
    if any(n.endswith((".pyc", ".pyo")) or "__pycache__" in n for n in names):
        problems.append("the sdist holds byte-code caches")


def main() -> int:
    dist = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "dist"
    version = source_version()
    expected = source_files()
    problems: list[str] = []
    wheel = one(dist, f"{PACKAGE}-*.whl")
    sdist = one(dist, f"{PACKAGE}-*.tar.gz")
    check_wheel(wheel, expected, version, problems)
    check_sdist(sdist, expected, version, problems)
    if not {f"{PACKAGE}/configs/quickstart-cpu.yaml", f"{PACKAGE}/py.typed"} <= expected:
        problems.append("src/ghostfacenets lacks configs/quickstart-cpu.yaml or py.typed")
    if problems:
        print("\n".join(f"check_wheel: {p}" for p in problems), file=sys.stderr)
        return 1
    modules = sum(n.endswith(".py") for n in expected)
    configs = sum(n.startswith(f"{PACKAGE}/configs/") for n in expected)
    static = sum(n.startswith(f"{PACKAGE}/serve/static/") for n in expected)
    other = len(expected) - modules - configs - static
    print(
        f"check_wheel: {wheel.name} and {sdist.name} hold all {len(expected)} files of src/{PACKAGE} "
        f"({modules} modules, {configs} configs, {static} static files of the service, {other} other), "
        f"version {version}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
