"""The browser runtime that the package ships, from the npm registry: onnxruntime-web's ES module, its WASM glue and
its threaded SIMD WebAssembly file (the only variant the browser module uses), into src/ghostfacenets/web/vendor/.

The files are committed (a clone, ``pip install -e .`` and the wheel have them; nothing is downloaded at run time or
at install time). The WebAssembly file is stored gzip-compressed (what the service sends to browsers, which all
accept gzip). This script writes them (``python .ci/vendor_web.py``) and ``.ci/run`` checks them
(``--check``): the tarball that ``npm pack`` fetches must have the pinned sha512, and each shipped file must equal its
file in the tarball byte for byte (the gzip file once decompressed).
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
from pathlib import Path

PACKAGE = "onnxruntime-web"
VERSION = "1.31.1"
INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
# tarball path -> shipped name (".gz": stored gzip-compressed)
FILES = {
    "package/dist/ort.wasm.min.mjs": "ort.wasm.min.mjs",
    "package/dist/ort-wasm-simd-threaded.mjs": "ort-wasm-simd-threaded.mjs",
    "package/dist/ort-wasm-simd-threaded.wasm": "ort-wasm-simd-threaded.wasm.gz",
}
VENDOR = Path(__file__).resolve().parents[1] / "src" / "ghostfacenets" / "web" / "vendor" / PACKAGE


def fetch_tarball() -> bytes:
    """The package's tarball from the npm registry (``npm pack``), checked against the pinned integrity."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            ["npm", "pack", f"{PACKAGE}@{VERSION}", "--pack-destination", folder, "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        data = next(Path(folder).glob("*.tgz")).read_bytes()
    found = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if found != INTEGRITY:
        sys.exit(f"{PACKAGE}@{VERSION}: the registry's tarball has {found}, expected {INTEGRITY}")
    return data


def members(tarball: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        out = {}
        for name in FILES:
            member = archive.extractfile(name)
            if member is None:
                sys.exit(f"{PACKAGE}@{VERSION}: {name} missing from the tarball")
            out[name] = member.read()
        return out


def write(files: dict[str, bytes]) -> None:
    VENDOR.mkdir(parents=True, exist_ok=True)
    for name, shipped in FILES.items():
        data = files[name]
        if shipped.endswith(".gz"):
            data = gzip.compress(data, compresslevel=9, mtime=0)
        (VENDOR / shipped).write_bytes(data)
        print(f"wrote {VENDOR / shipped} ({len(data):,} bytes)")


def check(files: dict[str, bytes]) -> int:
    bad = []
    for name, shipped in FILES.items():
        path = VENDOR / shipped
        if not path.is_file():
            bad.append(f"{path} missing")
            continue
        data = path.read_bytes()
        if shipped.endswith(".gz"):
            data = gzip.decompress(data)
        if data != files[name]:
            bad.append(f"{path} differs from {PACKAGE}@{VERSION}'s {name}")
    extra = {p.name for p in VENDOR.iterdir()} - set(FILES.values()) - {"LICENSE", "README.md"}
    bad += [f"{VENDOR / name}: not a file of the runtime" for name in sorted(extra)]
    for line in bad:
        print(line, file=sys.stderr)
    if not bad:
        print(f"{PACKAGE}@{VERSION}: the shipped files equal the registry's ({', '.join(FILES.values())})")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare the shipped files with the registry's")
    args = parser.parse_args()
    files = members(fetch_tarball())
    if args.check:
        return check(files)
    write(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
