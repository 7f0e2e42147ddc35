"""The browser runtimes that the package ships, from the npm registry, into src/ghostfacenets/web/vendor/:
onnxruntime-web (its WebAssembly-only ES module, the WASM glue and the threaded SIMD WebAssembly file), for ONNX
models, and LiteRT.js (``@litertjs/core`` and ``@litertjs/wasm-utils``: the module, and the WebAssembly builds it
picks from: threaded with relaxed SIMD, relaxed SIMD, and SIMD for browsers without relaxed SIMD), for the rest.

The files are committed (a clone, ``pip install -e .`` and the wheel have them; nothing is downloaded at run time or
at install time). WebAssembly files are stored gzip-compressed (what the service sends to browsers, which all
accept gzip). LiteRT.js's module imports ``@litertjs/wasm-utils`` by its package name, which a browser cannot
resolve: the shipped copy imports the file beside it instead, its only change. This script writes them
(``python .ci/vendor_web.py``) and ``.ci/run`` checks them (``--check``): the tarball that ``npm pack`` fetches must
have the pinned sha512, and each shipped file must equal its file in the tarball byte for byte (the gzip files once
decompressed, LiteRT.js's module once its import is rewritten the same way).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "src" / "ghostfacenets" / "web" / "vendor"


def _local_wasm_utils(data: bytes) -> bytes:
    before, after = b'from "@litertjs/wasm-utils"', b'from "./wasm-utils.mjs"'
    if data.count(before) != 1:
        sys.exit("@litertjs/core: its module no longer imports @litertjs/wasm-utils once; update .ci/vendor_web.py")
    return data.replace(before, after)


@dataclass(frozen=True)
class Package:
    """One npm package: tarball path -> shipped name (".gz": stored gzip-compressed), into ``folder``."""

    name: str
    version: str
    integrity: str
    folder: str
    files: dict[str, str]
    changes: dict[str, Callable[[bytes], bytes]] = field(default_factory=dict)  # tarball path -> its one change


PACKAGES = [
    Package(
        "onnxruntime-web",
        "1.31.1",
        "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==",
        "onnxruntime-web",
        {
            "package/dist/ort.wasm.min.mjs": "ort.wasm.min.mjs",
            "package/dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
            "package/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm.gz",
        },
    ),
    Package(
        "@litertjs/core",
        "2.5.3",
        "sha512-PlGmbMOq9WitX7FO0jhbdJw9GthatsyuCQXjTt/wJZo0FLaw48q4tz8IwqgqCIkviYGr9OFDL1kCnN4nzWoyJQ==",
        "litertjs",
        {
            "package/dist/index.js": "litert.mjs",
            **{
                f"package/wasm/litert_wasm_{build}internal.{suffix}": f"litert_wasm_{build}internal.{suffix}"
                + (".gz" if suffix == "wasm" else "")
                for build in ("threaded_", "", "compat_")
                for suffix in ("js", "wasm")
            },
        },
        {"package/dist/index.js": _local_wasm_utils},
    ),
    Package(
        "@litertjs/wasm-utils",
        "2.5.3",
        "sha512-4fJiw6tBQnIs+0jH/OQ16nYOiSl8/+zZnn5h2ul8aTKHi05sVqZW580Tmk78pC2kT39A9OYBVdFawteZ/sI1kQ==",
        "litertjs",
        {"package/dist/index.js": "wasm-utils.mjs"},
    ),
]


def fetch_tarball(package: Package) -> bytes:
    """The package's tarball from the npm registry (``npm pack``), checked against the pinned integrity."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            ["npm", "pack", f"{package.name}@{package.version}", "--pack-destination", folder, "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        data = next(Path(folder).glob("*.tgz")).read_bytes()
    found = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if found != package.integrity:
        sys.exit(f"{package.name}@{package.version}: the registry's tarball has {found}, expected {package.integrity}")
    return data


def shipped_contents(package: Package, tarball: bytes) -> dict[str, bytes]:
    """Shipped name -> the bytes it must hold once decompressed."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        out = {}
        for name, shipped in package.files.items():
            member = archive.extractfile(name)
            if member is None:
                sys.exit(f"{package.name}@{package.version}: {name} missing from the tarball")
            out[shipped] = package.changes.get(name, lambda data: data)(member.read())
        return out


def write(package: Package, contents: dict[str, bytes]) -> None:
    folder = VENDOR / package.folder
    folder.mkdir(parents=True, exist_ok=True)
    for shipped, data in contents.items():
        if shipped.endswith(".gz"):
            data = gzip.compress(data, compresslevel=9, mtime=0)
        (folder / shipped).write_bytes(data)
        print(f"wrote {folder / shipped} ({len(data):,} bytes)")


def check(package: Package, contents: dict[str, bytes]) -> list[str]:
    bad = []
    for shipped, expected in contents.items():
        path = VENDOR / package.folder / shipped
        if not path.is_file():
            bad.append(f"{path} missing")
            continue
        data = path.read_bytes()
        if shipped.endswith(".gz"):
            data = gzip.decompress(data)
        if data != expected:
            bad.append(f"{path} differs from {package.name}@{package.version}'s file")
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped files with the registry's")
    args = parser.parse_args()
    bad: list[str] = []
    for package in PACKAGES:
        contents = shipped_contents(package, fetch_tarball(package))
        if not args.check:
            write(package, contents)
            continue
        differences = check(package, contents)
        if not differences:
            print(f"{package.name}@{package.version}: the shipped files equal the registry's")
        bad += differences
    folders = {package.folder for package in PACKAGES}
    expected = {(p.folder, name) for p in PACKAGES for name in p.files.values()}
    for folder in sorted(folders):
        for path in sorted((VENDOR / folder).iterdir()):
            if (folder, path.name) not in expected and path.name not in ("LICENSE", "README.md"):
                bad.append(f"{path}: not a file of a runtime")
    for line in bad:
        print(line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
