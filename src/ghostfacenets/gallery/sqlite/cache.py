"""The SQLite store's search: exact, over each gallery's embeddings kept in memory and brought up to date with
what other threads and processes wrote (see the package's docstring)."""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import base
from ..base import Candidate, GalleryError, ModelId
from .connection import Connected

CACHED_GALLERIES = 4  # embedding matrices kept in memory (least recently searched dropped first)
FETCH_ROWS = 8192  # faces read at a time into the cache
_NAMED = " AND subject_id IS NOT NULL"  # unlabelled faces (gallery.people) are searched once their person is named


class _Rows:
    """A float32 matrix that grows at its end. A cache snapshot sees its first ``count`` rows, which never change:
    an append writes past every snapshot's rows (or into a copy), so the snapshots of a gallery share one buffer."""

    def __init__(self, dim: int, used: int) -> None:
        self.array = np.empty((used + max(256, used // 16), dim), dtype=np.float32)  # room for enrolments to come
        self.used = used  # rows written or reserved


@dataclass(frozen=True)
class _Matrix:
    """A gallery's embeddings in memory, in face-id order, and how they group by subject: ``order`` lists the rows
    subject by subject (None when they already are), group i starts at ``starts[i]`` and is ``subject_ids[i]``'s."""

    generation: int
    epoch: int
    model: ModelId | None
    rows: _Rows
    count: int
    last_face: int  # the largest face id held: the faces added later have larger ids
    face_subjects: np.ndarray  # (count,) subject id of each row
    order: np.ndarray | None
    starts: np.ndarray
    subject_ids: np.ndarray
    names: dict[int, str]  # subject id -> name; appends add to it (renames reload, so no name ever changes)

    @property
    def embeddings(self) -> np.ndarray:
        return self.rows.array[: self.count]


def _grouping(face_subjects: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(order, starts, subject ids) of rows whose subjects are ``face_subjects``."""
    grouped = bool(np.all(face_subjects[1:] >= face_subjects[:-1]))
    order = None if grouped else np.argsort(face_subjects, kind="stable")
    ordered = face_subjects if order is None else face_subjects[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(ordered) else np.zeros(0, np.int64)
    return order, starts, ordered[starts]


class SearchCache(Connected):
    """Searches over the cached embedding matrices."""

    _matrices: OrderedDict[int, _Matrix]

    def _matrix(self, gallery: str) -> _Matrix:
        """The gallery's embeddings: the cached ones, brought up to date within one read transaction (a write of
        another thread or process is in them whole or not at all)."""
        with self._transaction(write=False) as db:
            gallery_id, model = self._gallery_row(db, gallery)
            generation, epoch = db.execute(
                "SELECT generation, epoch FROM galleries WHERE id = ?", (gallery_id,)
            ).fetchone()
            with self._lock:
                cached = self._matrices.get(gallery_id)
                if cached is not None and cached.generation >= generation:  # a newer cache is a committed state too
                    self._matrices.move_to_end(gallery_id)
                    return cached
            if cached is not None and cached.epoch == epoch and cached.count:
                matrix = self._append(db, gallery, gallery_id, cached, generation)
            else:
                matrix = self._load(db, gallery, gallery_id, model, generation, epoch)
        with self._lock:
            current = self._matrices.get(gallery_id)
            if current is None or current.generation < matrix.generation:
                self._matrices[gallery_id] = matrix
            self._matrices.move_to_end(gallery_id)
            while len(self._matrices) > CACHED_GALLERIES:
                self._matrices.popitem(last=False)
        return matrix

    def _read_faces(
        self, db: sqlite3.Connection, gallery: str, target: np.ndarray, where: str, params: tuple[Any, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Copy the embeddings of the faces ``where`` selects, by id, into ``target`` (one row each, a batch at a
        time); returns their ids and subject ids."""
        count, dim = target.shape
        ids, subjects = np.empty(count, np.int64), np.empty(count, np.int64)
        cursor = db.execute(f"SELECT id, subject_id, embedding FROM faces WHERE {where} ORDER BY id", params)
        done = 0
        while batch := cursor.fetchmany(FETCH_ROWS):
            blob = b"".join(row[2] for row in batch)
            if done + len(batch) > count or len(blob) != 4 * dim * len(batch):
                raise GalleryError(f"{self.path}: gallery {gallery!r} holds embeddings of another size than {dim}")
            target[done : done + len(batch)] = np.frombuffer(blob, dtype="<f4").reshape(len(batch), dim)
            ids[done : done + len(batch)] = [row[0] for row in batch]
            subjects[done : done + len(batch)] = [row[1] for row in batch]
            done += len(batch)
        return ids, subjects

    def _load(
        self, db: sqlite3.Connection, gallery: str, gallery_id: int, model: ModelId | None, generation: int, epoch: int
    ) -> _Matrix:
        """The gallery read whole."""
        count = db.execute(f"SELECT COUNT(*) FROM faces WHERE gallery_id = ?{_NAMED}", (gallery_id,)).fetchone()[0]
        rows = _Rows(model.dim if model is not None else 0, count)
        ids, subjects = self._read_faces(db, gallery, rows.array[:count], f"gallery_id = ?{_NAMED}", (gallery_id,))
        names = dict(db.execute("SELECT id, name FROM subjects WHERE gallery_id = ?", (gallery_id,)).fetchall())
        last = int(ids[-1]) if count else 0
        return _Matrix(generation, epoch, model, rows, count, last, subjects, *_grouping(subjects), names)

    def _append(
        self, db: sqlite3.Connection, gallery: str, gallery_id: int, cached: _Matrix, generation: int
    ) -> _Matrix:
        """``cached`` with the faces added since it was read."""
        after = (gallery_id, cached.last_face)
        added = db.execute(f"SELECT COUNT(*) FROM faces WHERE gallery_id = ? AND id > ?{_NAMED}", after).fetchone()[0]
        count = cached.count + added
        with self._lock:  # reserve rows past the cached ones: in the shared buffer if nobody wrote there yet
            rows = cached.rows
            if rows.used != cached.count or len(rows.array) < count:
                rows = _Rows(rows.array.shape[1], count)
                rows.array[: cached.count] = cached.embeddings
            rows.used = count
        new_rows = rows.array[cached.count : count]
        ids, subjects = self._read_faces(db, gallery, new_rows, f"gallery_id = ? AND id > ?{_NAMED}", after)
        unknown = sorted(set(subjects.tolist()) - cached.names.keys())
        if unknown:
            new_names = db.execute(
                "SELECT id, name FROM subjects WHERE id IN (SELECT value FROM json_each(?))", (json.dumps(unknown),)
            )
            cached.names.update(new_names.fetchall())  # only additions: every snapshot's names stay as they were
        face_subjects = np.concatenate([cached.face_subjects, subjects])
        last = int(ids[-1]) if added else cached.last_face
        return _Matrix(
            generation, cached.epoch, cached.model, rows, count, last, face_subjects, *_grouping(face_subjects),
            cached.names,
        )  # fmt: skip

    def search(self, gallery: str, queries: np.ndarray, model: ModelId, k: int = 5) -> list[list[Candidate]]:
        queries = base.check_queries(queries, model, k)
        matrix = self._matrix(gallery)
        base.check_model(gallery, matrix.model, model)
        if matrix.count == 0:
            return [[] for _ in queries]
        scores = queries @ matrix.embeddings.T  # (Q, faces)
        if matrix.order is not None:
            scores = scores[:, matrix.order]
        best = np.maximum.reduceat(scores, matrix.starts, axis=1)  # (Q, subjects): each subject's best face
        results = []
        for row in best:
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            top = top[np.lexsort((matrix.subject_ids[top], -row[top]))]  # best first, then the older subject
            results.append(
                [
                    Candidate(int(matrix.subject_ids[i]), matrix.names[int(matrix.subject_ids[i])],
                              float(np.clip(row[i], -1, 1)))
                    for i in top
                ]
            )  # fmt: skip
        return results
