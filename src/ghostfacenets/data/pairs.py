"""Labelled image pairs from a text or CSV file: two image paths and a same/different label per line, optionally
with a column naming each pair's group (for per-group error rates)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GhostFaceNetsError

TRUE_LABELS = {"1", "true", "yes", "y", "same", "genuine", "match", "positive"}
FALSE_LABELS = {"0", "false", "no", "n", "different", "diff", "impostor", "non-match", "nonmatch", "negative"}


class PairsFileError(GhostFaceNetsError):
    """A pairs file that cannot be read."""


def parse_label(text: str) -> bool | None:
    """True for a same-person label (1, true, yes, same, genuine, match, ...), False for a different-person one,
    None for anything else."""
    value = text.strip().lower()
    return True if value in TRUE_LABELS else False if value in FALSE_LABELS else None


@dataclass(frozen=True)
class LabelledPairs:
    """Pairs read from a file: the two images of each pair, the labels and (with a group column) the groups."""

    images_a: list[Path]
    images_b: list[Path]
    issame: np.ndarray
    groups: list[str] | None


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PairsFileError(f"{path}: cannot read the pairs file ({exc})") from None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise PairsFileError(f"{path}: no pairs in the file")
    if "," in lines[0]:
        rows = list(csv.reader(io.StringIO("\n".join(lines))))
    elif "\t" in lines[0]:
        rows = [ln.split("\t") for ln in lines]
    else:
        rows = [ln.split() for ln in lines]
    return [[field.strip() for field in row] for row in rows]


def read_labelled_pairs(
    path: str | Path, root: str | Path | None = None, group_column: str | None = None
) -> LabelledPairs:
    """Labelled pairs from a text file: per line two image paths and a label (1/0, yes/no, true/false,
    same/different), separated by commas (CSV, e.g. deepface's master.csv), tabs or spaces. A first line whose label
    is not a label, or that has more than three fields, is a header (then every line has as many fields as it);
    ``#`` starts a comment. Relative paths are taken from ``root`` (default: the file's folder).

    ``group_column``: the name, in a header line that is then required, of a fourth or later column holding each
    pair's group (the first three columns are still image A, image B and the label, whatever their names).
    """
    path = Path(path)
    rows = _rows(path)
    base = Path(root) if root is not None else path.parent
    first = rows[0]
    group_index = None
    if group_column is not None:
        if group_column not in first[3:]:
            raise PairsFileError(
                f"{path}: the first line must be a header naming the group column {group_column!r} after the "
                f"image and label columns, got {first}"
            )
        group_index = first.index(group_column)
    has_header = group_index is not None or len(first) > 3 or (len(first) == 3 and parse_label(first[2]) is None)
    width = len(first) if has_header else 3  # fields per line: as many as the header names, else 3
    images_a, images_b, labels, groups = [], [], [], []
    for number, fields in enumerate(rows[1:] if has_header else rows, start=2 if has_header else 1):
        label = parse_label(fields[2]) if len(fields) == width else None
        if label is None:
            expected = "'image_a image_b label'" + ("" if group_index is None else f" and column {group_column!r}")
            raise PairsFileError(
                f"{path}, pair line {number}: expected {expected} ({width} fields) with a label such as 1/0 or "
                f"yes/no, got {fields}"
            )
        images_a.append(base / fields[0])
        images_b.append(base / fields[1])
        labels.append(label)
        if group_index is not None:
            if not fields[group_index]:
                raise PairsFileError(f"{path}, pair line {number}: empty group in column {group_column!r}")
            groups.append(fields[group_index])
    if not labels:
        raise PairsFileError(f"{path}: no pairs in the file")
    return LabelledPairs(images_a, images_b, np.array(labels, dtype=bool), groups if group_index is not None else None)
