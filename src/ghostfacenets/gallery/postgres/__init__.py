"""The gallery store in PostgreSQL with pgvector (:class:`PostgresStore`): shared by many workers and machines.

Tables live in their own schema (``ghostfacenets`` unless ``schema=`` says otherwise), created and migrated on first
use under an advisory lock (numbered migrations, the version in ``schema_version``; a newer schema is refused).
Embeddings are a pgvector ``vector`` column (or ``halfvec``, chosen when the schema is created) with one HNSW cosine
index per embedding size, a partial expression index (``embedding::vector(D)`` where ``dim = D``), so galleries of
models of different sizes share one table. The column's storage is PLAIN: a 512-d vector (2 KB) would otherwise be
moved out of line to TOAST, one more lookup for every face an exact search or an index build reads.

Every write is one transaction that first locks its gallery's row (``SELECT ... FOR UPDATE``): writes to one gallery
are serialised across processes and machines, writes to different galleries run in parallel, and the gallery's
counters (subjects, faces, crops) stay exact. Reads take no lock (MVCC snapshots).

Search scores each subject by its best face. Up to ``exact_limit`` faces in the gallery it is exact (every face of
the gallery scored); above, the HNSW index gives the nearest faces (``hnsw.ef_search`` = ``ef_search``, pgvector
0.8's iterative index scan so the gallery filter never starves the result) and the best subjects among them.

Options, as keyword arguments or URL query parameters (``postgresql://host/db?ef_search=200``): ``ef_search``
(default 100), ``exact_limit`` (5000), ``pool_size`` (10 connections), ``schema`` (ghostfacenets), and, when the
schema is created, ``vector_type`` (vector or halfvec), ``hnsw_m`` (16) and ``hnsw_ef_construction`` (64).
"""

from .index import IndexBuild, IndexInfo
from .options import DEFAULTS, split_options
from .schema import SCHEMA_VERSION
from .store import PostgresStore

__all__ = ["DEFAULTS", "SCHEMA_VERSION", "IndexBuild", "IndexInfo", "PostgresStore", "split_options"]
