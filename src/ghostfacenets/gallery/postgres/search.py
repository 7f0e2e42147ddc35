"""Searching a PostgreSQL gallery: exact up to ``exact_limit`` faces, through the HNSW index above."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import base
from ..base import Candidate, ModelId
from .index import MAX_INDEXED_DIM, IndexMixin


class SearchMixin(IndexMixin):
    """Searches: each subject scored by its best face."""

    def search(self, gallery: str, queries: np.ndarray, model: ModelId, k: int = 5) -> list[list[Candidate]]:
        queries = base.check_queries(queries, model, k)
        with self._transaction() as db:
            gallery_id, stored, faces = self._gallery_row(db, gallery)
            base.check_model(gallery, stored, model)
            if stored is None or faces == 0:
                return [[] for _ in queries]
            indexed = (
                faces > self.exact_limit
                and model.dim <= MAX_INDEXED_DIM[self.vector_type]
                and self._index_row(db, self._index_name(model.dim))[1]  # not while dropped, or building
            )
            if indexed:
                self._use_index(db)
            search = self._index_search if indexed else self._exact_search
            return [search(db, gallery_id, query, model.dim, k, faces) for query in queries]

    def _use_index(self, db: Any) -> None:
        """Search through the HNSW index for the rest of the transaction. The gallery's size is known exactly, so
        the choice is made here rather than by the planner, whose statistics lag behind bulk enrolments: sorting
        (which an exact plan needs) is ruled out, and the iterative scan goes on until the gallery filter has let
        through enough faces."""
        db.execute(  # one round trip
            f"SET LOCAL hnsw.ef_search = {int(self.ef_search)}; SET LOCAL hnsw.iterative_scan = relaxed_order; "
            "SET LOCAL enable_sort = off"
        )

    def _exact_search(
        self, db: Any, gallery_id: int, query: np.ndarray, dim: int, k: int, faces: int
    ) -> list[Candidate]:
        rows = db.execute(
            "SELECT f.subject_id, s.name, 1 - min(f.embedding <=> %s::{t}) AS similarity FROM faces f "
            "JOIN subjects s ON s.id = f.subject_id WHERE f.gallery_id = %s "
            "GROUP BY f.subject_id, s.name ORDER BY similarity DESC, f.subject_id LIMIT %s".replace(
                "{t}", self.vector_type
            ),
            (query, gallery_id, k),
        ).fetchall()
        return [Candidate(int(r[0]), r[1], float(np.clip(r[2], -1, 1))) for r in rows]

    def _index_search(
        self, db: Any, gallery_id: int, query: np.ndarray, dim: int, k: int, faces: int
    ) -> list[Candidate]:
        """The nearest faces through the HNSW index, best subjects among them; more faces are fetched while they
        hold fewer than ``k`` subjects (a subject with many faces can fill the first ones)."""
        typed = f"{self.vector_type}({dim})"
        limit = max(4 * k, 40)
        while True:
            rows = db.execute(
                f"WITH nearest AS MATERIALIZED (SELECT subject_id, embedding::{typed} <=> %(q)s::{typed} AS distance "
                f"FROM faces WHERE gallery_id = %(g)s AND dim = {dim} AND subject_id IS NOT NULL "
                f"ORDER BY embedding::{typed} <=> %(q)s::{typed} "
                "LIMIT %(n)s) SELECT n.subject_id, s.name, 1 - min(n.distance) AS similarity FROM nearest n "
                "JOIN subjects s ON s.id = n.subject_id GROUP BY n.subject_id, s.name "
                "ORDER BY similarity DESC, n.subject_id LIMIT %(k)s",
                {"q": query, "g": gallery_id, "n": limit, "k": k},
            ).fetchall()
            if len(rows) >= k or limit >= faces:
                return [Candidate(int(r[0]), r[1], float(np.clip(r[2], -1, 1))) for r in rows]
            limit *= 4

    def explain_search(self, gallery: str, query: np.ndarray, model: ModelId, k: int = 5) -> str:
        """The query plan of an index search (to check that the HNSW index is used)."""
        with self._transaction() as db:
            gallery_id, _, _ = self._gallery_row(db, gallery)
            self._use_index(db)
            typed = f"{self.vector_type}({model.dim})"
            rows = db.execute(
                f"EXPLAIN SELECT subject_id FROM faces WHERE gallery_id = %(g)s AND dim = {model.dim} "
                f"ORDER BY embedding::{typed} <=> %(q)s::{typed} LIMIT %(n)s",
                {"q": np.asarray(query, np.float32), "g": gallery_id, "n": max(4 * k, 40)},
            ).fetchall()
            return "\n".join(r[0] for r in rows)
