"""The gallery store in one SQLite file: the embedded default (:class:`SQLiteStore`).

Embeddings are little-endian float32 blobs (no pickle); the file uses WAL journaling, every write is one
``BEGIN IMMEDIATE`` transaction (a crash or a killed process leaves the last committed state), and several threads
(one connection each) and processes may use the same file.

Search is exact: one matrix product over the gallery's embeddings, kept in memory per gallery. Every write to a
gallery, from any process, bumps its ``generation``; a search that finds a newer generation than its cache reads,
in the same read transaction, only the faces added since (ids only grow: AUTOINCREMENT) and appends them, unless the
gallery's ``epoch`` moved too (bumped by deletions, re-embedding and renames, which change what the cache holds):
then it reloads the gallery whole. Either way the cache is one committed state of the gallery.

Schema versions (``PRAGMA user_version``): 1, one model and its ``identities``/``embeddings`` (ghostfacenets 0.1);
2, named galleries, subjects with metadata, faces, crops, API keys; 3, the galleries' ``epoch`` and an index of
faces by gallery; 4, keys' permissions and the audit trail; 5, people (photos, people, faces without a subject:
``faces`` rebuilt). Older files are migrated on first open, in one transaction (a v1 file becomes gallery
``default``).

Privacy: a new file is made 0600 (its ``-wal`` and ``-shm`` take its mode), ``secure_delete`` zeroes deleted rows,
and after every deletion (of a subject, a face, a gallery, or a subject's old name or metadata) the WAL is copied
into the file and truncated, so that what was deleted is in no file of the database.
"""

from .schema import SCHEMA_VERSION
from .store import SQLiteStore

__all__ = ["SCHEMA_VERSION", "SQLiteStore"]
