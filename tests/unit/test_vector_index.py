"""The vector index on a real LanceDB directory: tables per (model, weights), search with filters,
the ANN index once a table is large enough, deletes, and one-line errors for a damaged directory."""

from __future__ import annotations

import time

import numpy as np
import pytest

from services.index.search import (Query, SearchError, duplicates, filters, group_by_source, like_segment,
                                   parse_when, run)
from services.index.vectors import VectorIndex, VectorIndexError, table_name

DIM = 64


def rows(n: int, job: str = "j1", weights: str = "w1", seed: int = 0, label: str = "abseiling") -> list[dict]:
    vectors = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return [{"id": f"job:{job}:{i}", "kind": "job", "job": job, "stream": "", "source": f"/videos/{job}.mp4",
             "segment": i, "start_s": 1.6 * i, "end_s": 1.6 * i + 1.6, "label": label, "score": 0.5, "at": time.time(),
             "model": "x3d_xs", "weights": weights, "vector": vectors[i]} for i in range(n)]


def test_each_segment_finds_itself_first_and_filters_apply(tmp_path):
    index = VectorIndex(tmp_path / "index")
    index.add(rows(50, "j1") + rows(50, "j2", seed=1, label="juggling"))
    for row in rows(50, "j1")[:10]:
        [first, *_] = index.search("x3d_xs", "w1", row["vector"], top=3)
        assert first.row["id"] == row["id"] and first.similarity == pytest.approx(1.0, abs=1e-5)
    target = rows(50, "j2", seed=1)[7]
    found = index.search("x3d_xs", "w1", target["vector"], top=5, where=filters(job="j1"))
    assert found and all(m.row["job"] == "j1" for m in found)
    found = index.search("x3d_xs", "w1", target["vector"], top=5, where=filters(label="juggling", source="j2.mp4"))
    assert found[0].row["id"] == "job:j2:7" and all(m.row["label"] == "juggling" for m in found)
    groups = group_by_source(index.search("x3d_xs", "w1", target["vector"], top=10))
    assert groups[0]["job"] == "j2" and [m["start_s"] for m in groups[0]["matches"]] == \
        sorted(m["start_s"] for m in groups[0]["matches"])


def test_models_and_weights_never_mix(tmp_path):
    index = VectorIndex(tmp_path / "index")
    index.add(rows(5, "a", weights="w1") + rows(5, "b", weights="w2"))
    assert table_name("x3d_xs", "w1") != table_name("x3d_xs", "w2")
    found = index.search("x3d_xs", "w2", rows(5, "a", weights="w1")[0]["vector"], top=10)
    assert {m.row["job"] for m in found} == {"b"}
    assert index.search("x3d_m", "w1", rows(1)[0]["vector"]) == []  # no such table: nothing, not an error
    for bad in (np.ones(32, np.float32), np.full(DIM, 1e39), np.zeros(DIM)):  # a query of another size, inf, 0
        with pytest.raises(VectorIndexError, match="must hold 64 finite float32 values"):
            index.search("x3d_xs", "w1", bad)
    with pytest.raises(VectorIndexError, match="embeddings of 32 values"):
        index.add([{**rows(1, "c", weights="w1")[0], "vector": np.ones(32, np.float32)}])


def test_repeats_count_once_and_deletes_remove(tmp_path):
    index = VectorIndex(tmp_path / "index")
    index.add(rows(20, "j1"))
    index.add(rows(20, "j1")[:5])  # an indexer that crashed before acknowledging: the batch again
    found = index.search("x3d_xs", "w1", rows(20)[3]["vector"], top=20)
    assert len({m.row["id"] for m in found}) == len(found) == 20
    index.delete("job = 'j1' AND segment < 10")
    found = index.search("x3d_xs", "w1", rows(20)[3]["vector"], top=20)
    assert sorted(m.row["segment"] for m in found) == list(range(10, 20))


def test_a_large_table_gets_an_ann_index_and_still_finds_itself(tmp_path):
    index = VectorIndex(tmp_path / "index", index_at_rows=2000)
    index.add(rows(1500, "j1"))
    assert index.maintain() == []  # below the threshold: searched exhaustively
    index.add(rows(1500, "j2", seed=2))
    assert any("indexed 3000 rows" in done for done in index.maintain())
    [stats] = index.stats()
    assert stats["rows"] == 3000 and stats["indexed_rows"] == 3000
    table = index._table(table_name("x3d_xs", "w1"))
    assert {c for i in table.list_indices() for c in i.columns} >= {"vector", "id", "job", "label"}
    index.add(rows(10, "j3", seed=3))  # newer than the ANN index: found by the scan of new rows
    for row in rows(1500, "j2", seed=2)[::150] + rows(10, "j3", seed=3)[::3]:
        assert index.search("x3d_xs", "w1", row["vector"], top=1)[0].row["id"] == row["id"]
    assert any("folded in" in done for done in index.maintain())


def test_like_segment_and_bad_queries_are_one_line_errors(tmp_path):
    index = VectorIndex(tmp_path / "index")
    index.add(rows(5, "abc123"))
    query = like_segment(index, "abc123:2")
    assert query.model == "x3d_xs" and query.weights == "w1" and query.times == [pytest.approx((3.2, 4.8))]
    for ref, message in [("abc123:9", "not in the index"), ("abc123:x", "is not JOB:SEGMENT")]:
        with pytest.raises(SearchError, match=message):
            like_segment(index, ref)
    with pytest.raises(SearchError, match="nothing is indexed for x3d_m with weights w1 .indexed: x3d_xs with weights w1"):
        run(index, Query("x3d_m", "w1", [np.ones(DIM, np.float32)], "a vector"), 3, None)
    with pytest.raises(SearchError, match="is not a time"):
        parse_when("yesterday", "since")
    assert abs(parse_when("2h", "since") - (time.time() - 7200)) < 5


def test_a_damaged_index_directory_is_a_one_line_error(tmp_path):
    index = VectorIndex(tmp_path / "index")
    index.add(rows(5))
    [data] = (tmp_path / "index").glob("*.lance/data/*.lance")
    data.write_bytes(b"not a lance file")
    fresh = VectorIndex(tmp_path / "index")
    with pytest.raises(VectorIndexError) as caught:
        fresh.search("x3d_xs", "w1", rows(1)[0]["vector"])
    assert "\n" not in str(caught.value) and "move" in str(caught.value)


def test_a_trimmed_noisy_copy_is_a_duplicate_at_its_offset(tmp_path):
    index = VectorIndex(tmp_path / "index")
    rng = np.random.default_rng(5)
    walk = np.cumsum(rng.standard_normal((20, DIM)).astype(np.float32), axis=0)  # a video: segments drift
    original = [{**r, "vector": walk[i]} for i, r in enumerate(rows(20, "orig"))]
    index.add(original + rows(20, "other", seed=9))
    copy = walk[5:15] + 0.05 * rng.standard_normal((10, DIM)).astype(np.float32)  # from 8 s, 10 segments
    query = Query("x3d_xs", "w1", list(copy), "copy", [(1.6 * i, 1.6 * i + 1.6) for i in range(10)])
    [best, *rest] = duplicates(index, query)
    assert best["job"] == "orig" and best["offset_s"] == pytest.approx(8.0) and best["matched_segments"] == 10
    assert best["score"] > 0.95 and all(d["score"] < best["score"] for d in rest)


def test_an_indexer_that_dies_leaves_its_entries_to_another_and_a_repeat_is_found_once(tmp_path, redis_server_url,
                                                                                        monkeypatch):
    """At least once (services.store.index_outbox): entries read by an indexer that died before
    acknowledging them are claimed by another one after CLAIM_IDLE_MS; a batch appended twice (a
    crash between the append and the acknowledgement) is searched as one."""
    import redis

    from services.index import indexer as indexer_module
    from services.settings import Settings
    from services.store import index_outbox, keys
    from services.store.index_outbox import IndexOutbox, index_entry

    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    monkeypatch.setattr(index_outbox, "CLAIM_IDLE_MS", 300)
    outbox = IndexOutbox(client)
    written = rows(6, "j9")
    outbox.read("warm-up", 1, 1)  # the consumer group exists before the entries (as in a stack)
    for row in written:
        fields = {k: v for k, v in row.items() if k != "vector"}
        row_json, vector = index_entry(fields, row["vector"])
        client.xadd(keys.INDEX_OUTBOX, {"row": row_json, "v": vector})

    dead = outbox.read("indexer-that-died", 4, 100)  # read, then the process was killed: never acknowledged
    assert len(dead) == 4
    index = VectorIndex(tmp_path / "index")
    alive = indexer_module.Indexer(outbox, index, Settings(), "indexer-alive")
    assert alive.step(block_ms=100) == 2  # the two nobody read; the four are not idle long enough yet
    time.sleep(0.4)
    assert alive.step(block_ms=100) == 4  # claimed from the dead one
    assert alive.step(block_ms=100) == 0
    assert client.xpending(keys.INDEX_OUTBOX, index_outbox.GROUP)["pending"] == 0
    assert outbox.status()["indexed"] == 6 and outbox.backlog() == 0

    index.add(written[:3])  # the crash between append and acknowledgement: the same rows again
    assert len(index.values(["id"], "job = 'j9'")) == 9
    found = index.search("x3d_xs", "w1", written[1]["vector"], top=6)
    assert [m.row["id"] for m in found] == list(dict.fromkeys(m.row["id"] for m in found))  # each once
    assert found[0].row["id"] == "job:j9:1" and len(found) == 6
