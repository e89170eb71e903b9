"""The vector index itself: one LanceDB table per (model, weights), so embeddings of different
models or weights never meet in one search.

LanceDB is embedded (a directory of Lance files, here `$REELFLOW_HOME/index`), lets several
processes read while the indexer appends, keeps the newest rows searchable before they are in the
ANN index (it scans them), and speaks the same API to object storage (`s3://`, `gs://`) and to a
LanceDB server (`db://`), which is what a cluster points `REELFLOW_INDEX_URI` at. Chosen by
measurement (benchmarks/search.md): Milvus Lite and Qdrant's local mode search by brute force
and were 15-150x slower at 20,000 vectors.

A table holds one row per segment: `id` (`job:ID:SEGMENT` or `stream:NAME:SEGMENT`), `vector`
(float32, L2-normalised), the segment's source, job or stream, times, top label and score, and
`at` (when it was stored). Past INDEX_AT_ROWS rows a table gets an IVF index with RaBitQ codes;
rows added since are folded in by `maintain()`.

    >>> index = VectorIndex("/tmp/reelflow-index")                       # doctest: +SKIP
    >>> index.add([row, ...]); index.search("x3d_xs", "none:seed0", vector, top=10)
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pipelines.errors import ReelflowError, one_line

log = logging.getLogger("reelflow.index")

INDEX_AT_ROWS = 20_000  # below this a table is searched exhaustively (a few ms); above, with an IVF index
REINDEX_GROWTH = 2.0  # a table this many times larger than when it was indexed gets its partitions trained again
NPROBES = 24  # IVF partitions searched per query
REFINE = 4  # candidates re-ranked with the full vectors, per result wanted
COLUMNS = ["id", "kind", "job", "stream", "source", "segment", "start_s", "end_s", "label", "score", "at"]


class VectorIndexError(ReelflowError):
    """The index cannot be opened, read or written: one line with the cause and the fix."""


@dataclass(frozen=True)
class Match:
    """A search result: the row's fields and its cosine similarity to the query (1: the same)."""

    row: dict
    similarity: float

    def to_dict(self) -> dict:
        return {**self.row, "similarity": round(self.similarity, 6)}


def table_name(model: str, weights: str) -> str:
    """A table's name for (model, weights): readable, and unique through a short hash."""
    readable = re.sub(r"[^A-Za-z0-9_]+", "_", f"{model}__{weights}")[:80]
    digest = hashlib.sha256("\0".join((model, weights)).encode()).hexdigest()[:8]
    return f"{readable}_{digest}"


def quote(value: str) -> str:
    """A string literal for a Lance filter."""
    return "'" + str(value).replace("'", "''") + "'"


class VectorIndex:
    def __init__(self, uri: str | Path, index_at_rows: int = INDEX_AT_ROWS):
        self.uri = str(uri)
        self.index_at_rows = index_at_rows
        self._db = None
        self._tables: dict[str, object] = {}
        self._lock = threading.Lock()

    # -- opening --

    @property
    def db(self):
        if self._db is None:
            import lancedb  # pyarrow and Lance load with the first use, not with the CLI

            try:
                if "://" not in self.uri:
                    Path(self.uri).mkdir(parents=True, exist_ok=True)
                # a long-lived reader (the API) sees what indexers appended within a second
                self._db = lancedb.connect(self.uri, read_consistency_interval=timedelta(seconds=1))
            except Exception as e:
                raise VectorIndexError(f"cannot open the vector index at {self.uri} ({one_line(e)}); check "
                                       "REELFLOW_INDEX_URI") from None
        return self._db

    def table_names(self) -> list[str]:
        db = self.db  # its own error, if the index cannot be opened at all
        try:
            return sorted(db.table_names(limit=10_000))
        except Exception as e:
            raise VectorIndexError(f"cannot list the vector index at {self.uri} ({one_line(e)}); if the directory "
                                   "is damaged, move it aside (the index is rebuilt from new results)") from None

    def _table(self, name: str, create_dim: int | None = None):
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                db = self.db  # its own error, if the index cannot be opened at all
                try:
                    table = db.open_table(name)
                except (FileNotFoundError, ValueError):
                    if create_dim is None:
                        return None
                    table = db.create_table(name, schema=_schema(create_dim), exist_ok=True)
                except Exception as e:
                    raise VectorIndexError(f"the vector index table {name} at {self.uri} cannot be read "
                                           f"({one_line(e)}); move {self.uri} aside to start a new index") from None
                self._tables[name] = table
            return table

    # -- writing --

    def add(self, rows: list[dict]) -> int:
        """Append rows (each with `model`, `weights` and `vector` besides COLUMNS); returns how many."""
        import numpy as np  # here: client commands import this module, and start faster without numpy
        import pyarrow as pa

        by_table: dict[str, list[dict]] = {}
        for row in rows:
            by_table.setdefault(table_name(row["model"], row["weights"]), []).append(row)
        for name, group in by_table.items():
            vectors = np.stack([_normalised(r["vector"]) for r in group])
            table = self._table(name, create_dim=vectors.shape[1])
            dim = table.schema.field("vector").type.list_size
            if vectors.shape[1] != dim:
                raise VectorIndexError(f"embeddings of {vectors.shape[1]} values for table {name}, which holds "
                                       f"{dim}; the model's head changed: use other weights' name")
            columns = {c: [r.get(c) for r in group] for c in [*COLUMNS, "model", "weights"]}
            data = pa.table({**{c: pa.array(v, type=_schema(dim).field(c).type) for c, v in columns.items()},
                             "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim)},
                            schema=_schema(dim))
            table.add(data)
        return len(rows)

    def delete(self, where: str) -> None:
        """Delete the rows matching `where` in every table."""
        for name in self.table_names():
            self._table(name).delete(where)

    def maintain(self) -> list[str]:
        """Keep each table fast to search: an IVF index once it is large enough (trained again when it
        has grown a lot), newer rows folded in, small files merged. Returns what was done."""
        done = []
        for name in self.table_names():
            table = self._table(name)
            rows = table.count_rows()
            indexed = {i.name: i for i in table.list_indices()}
            if "vector_idx" not in indexed:
                if rows >= self.index_at_rows:
                    _create_index(table, rows)
                    done.append(f"{name}: indexed {rows} rows")
                continue
            stats = table.index_stats("vector_idx")
            at_training = stats.num_indexed_rows + stats.num_unindexed_rows if stats else rows
            if stats and rows > REINDEX_GROWTH * max(1, stats.num_indexed_rows):
                _create_index(table, rows)
                done.append(f"{name}: indexed again at {rows} rows (was {at_training})")
            elif stats and stats.num_unindexed_rows:
                table.optimize()
                done.append(f"{name}: {stats.num_unindexed_rows} new rows folded in")
        return done

    # -- reading --

    def has(self, model: str, weights: str) -> bool:
        return self._table(table_name(model, weights)) is not None

    def search(self, model: str, weights: str, vector, top: int = 10, where: str | None = None,
               exclude: str | None = None) -> list[Match]:
        """The `top` rows of (model, weights) most like `vector`, best first; `where` filters (a Lance
        SQL predicate), `exclude` leaves one id out (the query itself)."""
        import numpy as np  # here: client commands import this module, and start faster without numpy

        table = self._table(table_name(model, weights))
        if table is None:
            return []
        vector = _normalised(vector)
        dim = table.schema.field("vector").type.list_size
        if vector.size != dim or not np.isfinite(vector).all() or not vector.any():
            raise VectorIndexError(f"a query vector must hold {dim} finite float32 values, not all zero ({model}'s "
                                   f"embeddings); this one has {vector.size}")
        filters = " AND ".join(f"({w})" for w in (where, f"id != {quote(exclude)}" if exclude else None) if w)
        query = (table.search(vector, vector_column_name="vector").distance_type("cosine")
                 .nprobes(NPROBES).refine_factor(REFINE).limit(top * 2 + 2).select([*COLUMNS, "_distance"]))
        if filters:
            query = query.where(filters, prefilter=True)
        try:
            found = query.to_list()
        except Exception as e:
            raise VectorIndexError(f"searching {table_name(model, weights)} failed ({one_line(e)}); check the "
                                   "filters, or move a damaged index aside") from None
        matches, seen = [], set()
        for row in found:  # the indexer delivers at least once: a segment may be in twice
            if row["id"] not in seen:
                seen.add(row["id"])
                similarity = 1.0 - float(row.pop("_distance"))
                matches.append(Match(row, similarity))
        return matches[:top]

    def find(self, where: str, limit: int = 1, vectors: bool = False) -> list[tuple[str, str, dict]]:
        """Rows matching `where` in any table, as (model, weights, row); with `vectors`, each row's
        `vector` too."""
        found = []
        for name in self.table_names():
            table = self._table(name)
            columns = [*COLUMNS, "model", "weights"] + (["vector"] if vectors else [])
            for row in table.search().where(where).select(columns).limit(limit).to_list():
                found.append((row.pop("model"), row.pop("weights"), row))
        return found

    def values(self, columns: list[str], where: str) -> list[dict]:
        """Only `columns` of every row matching `where`, in any table (cheap: one column scan)."""
        out = []
        for name in self.table_names():
            table = self._table(name)
            out += table.search().where(where).select(columns).limit(table.count_rows() + 1).to_arrow().to_pylist()
        return out

    def stats(self) -> list[dict]:
        """Per table: its model, weights, rows, rows in the ANN index, and bytes on disk (local)."""
        out = []
        for name in self.table_names():
            table = self._table(name)
            rows = table.count_rows()
            first = table.search().select(["model", "weights"]).limit(1).to_list()
            stats = table.index_stats("vector_idx") if any(i.name == "vector_idx" for i in table.list_indices()) \
                else None
            path = Path(self.uri) / f"{name}.lance"
            out.append({"table": name, "model": first[0]["model"] if first else None,
                        "weights": first[0]["weights"] if first else None, "rows": rows,
                        "indexed_rows": stats.num_indexed_rows if stats else 0,
                        "bytes": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists()
                        else None})
        return out


def _schema(dim: int):
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("kind", pa.string()), ("job", pa.string()), ("stream", pa.string()),
        ("source", pa.string()), ("segment", pa.int64()), ("start_s", pa.float64()), ("end_s", pa.float64()),
        ("label", pa.string()), ("score", pa.float32()), ("at", pa.float64()), ("model", pa.string()),
        ("weights", pa.string()), ("vector", pa.list_(pa.float32(), dim)),
    ])


def _normalised(vector):
    """`vector` as float32 of unit length (as it is, when its norm is 0 or not finite)."""
    import numpy as np  # here: client commands import this module, and start faster without numpy

    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32: not finite, refused by the caller
        v = np.asarray(vector, dtype=np.float32).ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 and np.isfinite(norm) else v


SCALAR_INDEXES = {"id": "BTREE", "job": "BTREE", "stream": "BITMAP", "label": "BITMAP", "kind": "BITMAP"}


def _create_index(table, rows: int) -> None:
    """An IVF index with RaBitQ codes (partitions of ~sqrt(rows) vectors each), and indexes of the
    columns that lookups and filters name, so that they read a few rows rather than scan them all."""
    table.create_index(metric="cosine", index_type="IVF_RQ", num_partitions=max(8, int(math.sqrt(rows))),
                       name="vector_idx", replace=True)
    for column, kind in SCALAR_INDEXES.items():
        table.create_scalar_index(column, index_type=kind, replace=True)
