"""What every part of :class:`~.store.PostgresStore` shares: its settings, the connection pool's transactions and
the lookup of a gallery's row."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .. import base
from ..base import ConflictError, GalleryError, ModelId, NotFoundError
from .options import POOL_TIMEOUT_S
from .rows import to_model


class Connected:
    """The state the store's parts share (set by :class:`~.store.PostgresStore`'s constructor) and the helpers
    they all use."""

    location: str
    schema: str
    options: dict[str, Any]
    vector_type: str
    hnsw: tuple[int, int]
    ef_search: int
    exact_limit: int
    _psycopg: Any
    _jsonb: Any
    _pool: Any
    _conninfo: str
    _configure: Callable[[Any], None]

    @staticmethod
    def _reason(exc: Exception) -> str:
        """A driver error as one line."""
        text = str(exc).strip().splitlines()
        return text[0] if text else type(exc).__name__

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A pooled connection in one transaction; driver errors become one-line GalleryErrors."""
        import psycopg_pool

        psycopg = self._psycopg
        try:
            with self._pool.connection() as db, db.transaction():
                yield db
        except psycopg_pool.PoolTimeout:
            raise GalleryError(f"{self.location}: no free database connection within {POOL_TIMEOUT_S} s") from None
        except psycopg_pool.PoolClosed:
            raise GalleryError(f"{self.location}: the gallery store is closed") from None
        except psycopg.errors.UniqueViolation as exc:
            raise ConflictError(f"{self.location}: {self._reason(exc)} (a concurrent write; try again)") from None
        except psycopg.Error as exc:
            raise GalleryError(f"{self.location}: {self._reason(exc)}") from None

    def _gallery_row(self, db: Any, name: str, lock: bool = False) -> tuple[int, ModelId | None, int]:
        """(id, model, faces) of a gallery; ``lock``: held until the transaction ends (every write does this)."""
        row = db.execute(
            "SELECT g.id, m.name, m.sha256, m.dim, m.flip, g.faces FROM galleries g "
            "LEFT JOIN models m ON m.id = g.model_id WHERE g.name = %s" + (" FOR UPDATE OF g" if lock else ""),
            (base.check_gallery_name(name),),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{self.location}: no gallery named {name!r}")
        return row[0], to_model(row[1:5]), row[5]

    def _count(self, db: Any, gallery_id: int, subjects: int = 0, faces: int = 0, crops: int = 0) -> None:
        db.execute(
            "UPDATE galleries SET subjects = subjects + %s, faces = faces + %s, crops = crops + %s WHERE id = %s",
            (subjects, faces, crops, gallery_id),
        )
