"""The vector index on a real LanceDB directory: tables per (model, weights), search with filters,
the ANN index once a table is large enough, deletes, and one-line errors for a damaged directory."""

from __future__ import annotations

import time

import numpy as np
import pytest

from services.index.search import (Query, SearchError, duplicates, filters, group_by_source, like_segment,
                                   parse_when, run)
from services.index.vectors import VectorIndex, VectorIndexError, table_name
from support.vector_rows import DIM, rows



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



def test_an_index_that_cannot_be_opened_says_so_from_every_call(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    index = VectorIndex(blocker / "index")  # cannot be made, even by root
    for call in (index.table_names, index.stats, lambda: index.delete("kind = 'job'"), lambda: index.add(rows(1))):
        with pytest.raises(VectorIndexError) as caught:
            call()
        assert str(caught.value).startswith("cannot open the vector index") and "REELFLOW_INDEX_URI" in \
            str(caught.value) and "\n" not in str(caught.value)
