"""Hostile inputs for the service's tests, built at run time (no large binary in the repository)."""

from __future__ import annotations

import io
import re

_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each start-of-scan segment with its entropy-coded data, of a JPEG written by Pillow."""
    pos, found = 2, []
    while data[pos + 1] != 0xD9:
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if data[pos + 1] == 0xDA:
            match = _AFTER_SCAN.search(data, end)
            assert match is not None
            end = match.start()
            found.append((pos, end))
        pos = end
    return found


def scan_bomb(width: int, height: int, scans: int) -> bytes:
    """A progressive JPEG of ``width`` x ``height`` with ``scans`` scans: Pillow's own (10) and its last one (an AC
    refinement over the whole image) repeated. libjpeg warns of a bogus progression and decodes every repeat, each
    costing a pass over the whole image; a few kB of file per hundred scans."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 90, 60)).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    written = _scans(data)
    start, end = written[-1]
    return data[:end] + data[start:end] * (scans - len(written)) + data[end:]


def blank_png(width: int, height: int) -> bytes:
    """A greyscale PNG of ``width`` x ``height`` zeros: tens of kB for 40 megapixels, decoded to 3 bytes a pixel."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()
