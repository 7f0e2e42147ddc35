"""insightface RecordIO (``train.rec`` / ``train.idx`` / ``property``) read and written without MXNet.

The format is dmlc RecordIO as MXNet writes it: each record is ``uint32 magic 0xced7230a``, ``uint32 lrecord`` (upper
3 bits continuation flag, lower 29 bits length), the data, and zero padding to a multiple of 4. Data that contains
the magic word at a 4-byte aligned position is split there into parts (flags 1 = first, 2 = middle, 3 = last) and
the magic is dropped; a reader joins the parts with the magic. Each record's data starts with MXNet's ``IRHeader``
(``<IfQQ``: flag, label, id, id2); a positive flag means ``flag`` float32 labels follow the header.

insightface layout (MS1MV2 ``faces_emore``, MS1MV3 ``ms1m-retinaface-t1``): key 0 is a header record whose labels
are ``[N + 1, N + 1 + K]``; keys 1..N are JPEG images labelled with their identity; keys N+1..N+K are one record per
identity whose labels are ``[first image key, last image key + 1]``. ``property`` holds ``K,112,112``.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import GhostFaceNetsError
from ..files import atomic_path

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_LENGTH_MASK = (1 << 29) - 1
_SCAN_CHUNK = 1 << 20  # bytes read at a time when looking for the next record after a damaged one
IR_FORMAT = "<IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)


class RecordError(GhostFaceNetsError):
    """A record that cannot be read (bad magic, truncated, malformed header)."""


@dataclass(frozen=True)
class IRHeader:
    """MXNet's image record header: ``label`` is a float, or the float32 label array when ``flag`` > 0."""

    flag: int
    label: float | tuple[float, ...]
    id: int
    id2: int = 0

    @property
    def first_label(self) -> float:
        return self.label if isinstance(self.label, float) else self.label[0]


def pack(header: IRHeader, payload: bytes = b"") -> bytes:
    """Header and payload -> record data, as ``mxnet.recordio.pack``."""
    if isinstance(header.label, (int, float)):
        return struct.pack(IR_FORMAT, 0, float(header.label), header.id, header.id2) + payload
    labels = np.asarray(header.label, dtype="<f4")
    return struct.pack(IR_FORMAT, labels.size, 0.0, header.id, header.id2) + labels.tobytes() + payload


def unpack(data: bytes, name: str = "record") -> tuple[IRHeader, bytes]:
    """Record data -> (header, payload), as ``mxnet.recordio.unpack``."""
    if len(data) < IR_SIZE:
        raise RecordError(f"{name}: {len(data)} bytes, shorter than the {IR_SIZE}-byte image record header")
    flag, label, rid, rid2 = struct.unpack_from(IR_FORMAT, data)
    if flag == 0:
        return IRHeader(0, float(label), rid, rid2), data[IR_SIZE:]
    end = IR_SIZE + 4 * flag
    if end > len(data):
        raise RecordError(f"{name}: header announces {flag} labels but the record holds {len(data)} bytes")
    labels = tuple(float(v) for v in np.frombuffer(data, dtype="<f4", count=flag, offset=IR_SIZE))
    return IRHeader(flag, labels, rid, rid2), data[end:]


def encode_record(data: bytes) -> bytes:
    """Record data -> bytes on disk, split at aligned magic words exactly as dmlc's ``RecordIOWriter``."""
    if len(data) >= 1 << 29:
        raise ValueError("RecordIO records must be smaller than 512 MiB")
    out, start = bytearray(), 0
    for i in range(0, len(data) - len(data) % 4, 4):
        if data[i : i + 4] == _MAGIC_BYTES:
            out += struct.pack("<II", MAGIC, ((1 if start == 0 else 2) << 29) | (i - start)) + data[start:i]
            start = i + 4
    out += struct.pack("<II", MAGIC, ((3 if start else 0) << 29) | (len(data) - start)) + data[start:]
    out += b"\x00" * (-len(data) % 4)
    return bytes(out)


class RecordFile:
    """Random access to the records of a ``.rec`` file by key (through its ``.idx``) or by byte offset.

    Without an ``.idx`` the file is walked once and its records are numbered in file order. A damaged record met
    on the way keeps its number (reading it raises :class:`RecordError`) and the walk goes on at the next record
    start, so one bad record neither stops the walk nor shifts the numbers of the records after it.
    Safe to use from DataLoader workers: the file is (re)opened in each process and read with ``pread``.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self._fd: int | None = None
        self._pid = -1
        self.rec_path = Path(rec_path)
        if not self.rec_path.is_file():
            raise GhostFaceNetsError(f"{self.rec_path}: no such RecordIO file")
        self.size = self.rec_path.stat().st_size
        idx = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(".idx")
        self.idx_path = idx if idx.is_file() else None
        #: idx lines that could not be parsed (line number, text); their records are unreachable
        self.bad_index_lines: list[tuple[int, str]] = []
        #: keys of records found damaged by the walk of a file without .idx, with the reason
        self.damaged: dict[int, str] = {}
        self.offsets = self._read_index(self.idx_path) if self.idx_path else self._scan()

    def _read_index(self, path: Path) -> dict[int, int]:
        offsets: dict[int, int] = {}
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    key, offset = raw.decode("ascii").split("\t")
                    offsets[int(key)] = int(offset)
                except ValueError:
                    self.bad_index_lines.append((number, raw[:80].decode("ascii", "replace").rstrip()))
        return offsets

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": -1}

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and self._pid == os.getpid():
            os.close(fd)
        self._fd = None

    def _read(self, offset: int, size: int) -> bytes:
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0)), os.getpid()
        if hasattr(os, "pread"):
            return os.pread(self._fd, size, offset)
        os.lseek(self._fd, offset, os.SEEK_SET)  # pragma: no cover - Windows
        return os.read(self._fd, size)

    def keys(self) -> list[int]:
        return sorted(self.offsets)

    def _walk(self, offset: int, name: str) -> tuple[list[tuple[int, int]], int]:
        """The parts (data offset, length) of the record starting at byte ``offset`` and the offset after it;
        RecordError when its framing is damaged. Reads only the 8-byte part headers."""
        parts: list[tuple[int, int]] = []
        position = offset
        while True:
            head = self._read(position, 8)
            if len(head) < 8:
                raise RecordError(f"{name}: truncated at byte {position} (file ends at {self.size})")
            magic, lrecord = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordError(f"{name}: no RecordIO magic at byte {position} (found {magic:#010x})")
            cflag, length = lrecord >> 29, lrecord & _LENGTH_MASK
            if position + 8 + length > self.size:
                raise RecordError(f"{name}: record of {length} bytes at byte {position} runs past the end of the file")
            parts.append((position + 8, length))
            position += 8 + length + (-length % 4)
            if cflag in (0, 3):
                if (cflag == 3) != (len(parts) > 1):
                    raise RecordError(
                        f"{name}: continuation flag {cflag} at byte {position} after {len(parts) - 1} part(s)"
                    )
                return parts, position
            if cflag not in (1, 2) or (cflag == 1) != (len(parts) == 1):
                raise RecordError(f"{name}: bad continuation flag {cflag} at byte {position}")

    def read_at(self, offset: int, name: str = "record") -> tuple[bytes, int]:
        """(record data, offset of the next record) for the record starting at byte ``offset``."""
        parts, end = self._walk(offset, name)
        data = [self._read(start, length) for start, length in parts]
        if any(len(d) < length for d, (_, length) in zip(data, parts)):
            raise RecordError(f"{name}: the file ends inside the record at byte {offset}")
        return _MAGIC_BYTES.join(data), end

    def read(self, key: int) -> bytes:
        """The data of record ``key``."""
        name = f"{self.rec_path} record {key}"
        if key not in self.offsets:
            raise RecordError(f"{name}: not in {self.idx_path or self.rec_path}")
        if key in self.damaged:
            raise RecordError(f"{name}: {self.damaged[key]}")
        return self.read_at(self.offsets[key], name)[0]

    def _next_record_start(self, start: int) -> int:
        """The first 4-byte aligned offset at or after ``start`` that holds the magic word (the file size if none).
        In an intact file the magic sits there only at record and part starts: writers escape it in the data."""
        position = start + (-start % 4)
        while position < self.size:
            chunk = self._read(position, _SCAN_CHUNK)  # a multiple of 4 bytes: no aligned word spans two chunks
            found = chunk.find(_MAGIC_BYTES)
            while found >= 0 and found % 4:
                found = chunk.find(_MAGIC_BYTES, found + 1)
            if found >= 0:
                return position + found
            position += len(chunk) or self.size
        return self.size

    def _scan(self) -> dict[int, int]:
        """Offsets of the records in file order, found by walking the file (for a ``.rec`` without ``.idx``)."""
        offsets: dict[int, int] = {}
        position = 0
        while position < self.size:
            key = len(offsets)
            offsets[key] = position
            try:
                parts, end = self._walk(position, f"record {key}")
            except RecordError as exc:
                self.damaged[key] = str(exc).removeprefix(f"record {key}: ")
                position = self._next_record_start(position + 4)
                continue
            if end < self.size and self._read(end, 4) != _MAGIC_BYTES:
                following = self._next_record_start(parts[-1][0])
                if following < end:  # a record starts inside this one: its length is damaged
                    self.damaged[key] = f"its length runs past the record that starts at byte {following}"
                    end = following
                # else this record is whole and the next one is damaged: it gets its own key
            position = end
        return offsets


class RecordWriter:
    """Writes ``train.rec`` and ``train.idx`` (``key<TAB>offset``) atomically: both appear only on ``close()``."""

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self._rec_ctx, self._idx_ctx = atomic_path(rec_path), atomic_path(idx_path)
        self._rec: BinaryIO = open(self._rec_ctx.__enter__(), "wb")
        self._idx: BinaryIO = open(self._idx_ctx.__enter__(), "wb")
        self.position = 0

    def write(self, key: int, data: bytes) -> None:
        encoded = encode_record(data)
        self._idx.write(f"{key}\t{self.position}\n".encode("ascii"))
        self._rec.write(encoded)
        self.position += len(encoded)

    def overwrite(self, position: int, data: bytes) -> None:
        """Replace the record at byte ``position`` by one of exactly the same encoded size."""
        encoded = encode_record(data)
        if position + len(encoded) > self.position:
            raise ValueError("overwrite must not extend the file")
        self._rec.seek(position)
        self._rec.write(encoded)
        self._rec.seek(0, os.SEEK_END)

    def close(self) -> None:
        for handle in (self._rec, self._idx):
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self._rec_ctx.__exit__(None, None, None)
        self._idx_ctx.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self._rec.close()
        self._idx.close()
        self._rec_ctx.__exit__(type(exc), exc, exc.__traceback__)
        self._idx_ctx.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


def find_record_files(path: str | Path) -> tuple[Path, Path | None]:
    """``train.rec`` (and ``train.idx`` if present) from a directory or a ``.rec`` path."""
    path = Path(path)
    rec = path / "train.rec" if path.is_dir() else path
    if rec.suffix != ".rec" or not rec.is_file():
        raise GhostFaceNetsError(f"{path}: no RecordIO file (expected a .rec file or a folder with train.rec)")
    idx = rec.with_suffix(".idx")
    return rec, idx if idx.is_file() else None


def read_property(directory: str | Path) -> tuple[int, int, int] | None:
    """(identities, height, width) from insightface's ``property`` file, or None when there is none."""
    path = Path(directory) / "property"
    if not path.is_file():
        return None
    try:
        values = tuple(int(v) for v in path.read_text().strip().split(","))
        classes, height, width = values
    except ValueError:
        raise GhostFaceNetsError(f"{path}: expected 'identities,height,width', got {path.read_text()[:40]!r}") from None
    return classes, height, width


def write_property(directory: str | Path, classes: int, height: int, width: int) -> Path:
    from ..files import atomic_write

    path = Path(directory) / "property"
    with atomic_write(path, "w") as f:
        f.write(f"{classes},{height},{width}\n")
    return path


class InsightFaceRecords:
    """An insightface training set in RecordIO: image keys, identity labels and images."""

    def __init__(self, path: str | Path) -> None:
        rec, idx = find_record_files(path)
        self.directory = rec.parent
        self.file = RecordFile(rec, idx)
        self.property = read_property(self.directory)
        self.header: IRHeader | None = None
        #: why record 0, a header record by its form, was ignored (its labels are not a key range of this file)
        self.header_problem: str | None = None
        keys = self.file.keys()
        if 0 in self.file.offsets:
            try:
                header, _ = unpack(self.file.read(0), f"{rec.name} record 0")
            except RecordError:
                header = None
            if header is not None and header.flag > 0 and isinstance(header.label, tuple):
                first = header.label[0]
                end = header.label[1] if len(header.label) > 1 else first
                whole = all(math.isfinite(v) and v.is_integer() for v in (first, end))
                if whole and 1 <= first <= end <= keys[-1] + 1:
                    self.header = header
                    keys = [k for k in keys if 1 <= k < first]
                else:
                    self.header_problem = (
                        f"header labels {list(header.label)} are not the key range [images + 1, "
                        f"images + 1 + identities] of this file's {len(keys)} records; the header "
                        "is ignored and every other record is read as an image"
                    )
                    keys = keys[1:]
        #: keys of the image records, in file order
        self.image_keys: list[int] = keys

    def __len__(self) -> int:
        return len(self.image_keys)

    @property
    def num_classes(self) -> int | None:
        """Identities from ``property`` or the header record; None when neither says (labels must be scanned)."""
        if self.property is not None:
            return self.property[0]
        if self.header is not None and isinstance(self.header.label, tuple) and len(self.header.label) >= 2:
            return int(self.header.label[1] - self.header.label[0])
        return None

    def read(self, key: int) -> tuple[bytes, int]:
        """(encoded image bytes, identity label) of image record ``key``; RecordError if it is damaged."""
        name = f"{self.file.rec_path} record {key}"
        header, payload = unpack(self.file.read(key), name)
        label = header.first_label
        if not float(label).is_integer() or label < 0:
            raise RecordError(f"{name}: label {label} is not an identity number")
        if not payload:
            raise RecordError(f"{name}: no image data")
        return payload, int(label)


def write_insightface_records(
    directory: str | Path,
    images: Iterator[tuple[bytes, int]],
    image_size: tuple[int, int] = (112, 112),
) -> tuple[int, int]:
    """Write ``train.rec``, ``train.idx`` and ``property`` in the insightface layout from (JPEG bytes, label) pairs
    grouped by label, labels 0..K-1 ascending. Returns (images, identities)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ranges: list[tuple[int, int]] = []
    with RecordWriter(directory / "train.rec", directory / "train.idx") as writer:
        # The header record needs N and K, which are known only at the end: write a placeholder of the same size
        # (same byte length whatever the values) and patch it in place before the files are renamed.
        writer.write(0, pack(IRHeader(2, (0.0, 0.0), 0, 0)))
        key = 0
        for key, (payload, label) in enumerate(images, 1):
            if label == len(ranges):
                ranges.append((key, key))
            elif label != len(ranges) - 1:
                raise ValueError(f"images must be grouped by label 0..K-1 in order; label {label} at image {key}")
            ranges[-1] = (ranges[-1][0], key + 1)
            writer.write(key, pack(IRHeader(0, float(label), key, 0), payload))
        count = key
        for j, (first, end) in enumerate(ranges):
            writer.write(count + 1 + j, pack(IRHeader(2, (float(first), float(end)), count + 1 + j, 0)))
        writer.overwrite(0, pack(IRHeader(2, (float(count + 1), float(count + 1 + len(ranges))), 0, 0)))
    write_property(directory, len(ranges), *image_size)
    return count, len(ranges)
