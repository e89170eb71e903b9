"""The indexer on a real Redis and a real LanceDB directory: indexing is at least once, as
services.store.index_outbox says (fast: no stack, no model)."""

from __future__ import annotations

import time

from services.index.vectors import VectorIndex, table_name
from support.vector_rows import rows


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

    # made first: on a busy machine making them took longer than the claim's idle time (a flake)
    index = VectorIndex(tmp_path / "index")
    alive = indexer_module.Indexer(outbox, index, Settings(), "indexer-alive", linger_s=0)
    dead = outbox.read("indexer-that-died", 4, 100)  # read, then the process was killed: never acknowledged
    assert len(dead) == 4
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


def test_segments_stored_while_the_indexer_lingers_go_into_the_index_in_one_write(tmp_path, redis_server_url):
    """Jobs store a few segments at a time: the indexer waits `linger_s` after the first ones and
    appends everything that came meanwhile at once (one new version of the table, not one each)."""
    import threading

    import redis

    from services.index import indexer as indexer_module
    from services.settings import Settings
    from services.store import keys
    from services.store.index_outbox import IndexOutbox, index_entry

    client = redis.Redis.from_url(redis_server_url)
    client.flushall()
    outbox = IndexOutbox(client)
    outbox.read("warm-up", 1, 1)
    written = rows(5, "j7")

    def offer(row):
        row_json, vector = index_entry({k: v for k, v in row.items() if k != "vector"}, row["vector"])
        client.xadd(keys.INDEX_OUTBOX, {"row": row_json, "v": vector})

    index = VectorIndex(tmp_path / "index")
    index.add(rows(1, "j0"))  # the table exists: its version counts writes from here
    table = index.db.open_table(table_name("x3d_xs", "w1"))
    version = table.version
    indexer = indexer_module.Indexer(outbox, index, Settings(), "indexer", linger_s=2.0)
    offer(written[0])
    later = threading.Timer(0.3, lambda: [offer(row) for row in written[1:]])  # while it lingers
    later.start()
    assert indexer.step(block_ms=100) == 5
    later.join()
    table.checkout_latest()
    assert table.version == version + 1  # one write for the five
    assert len(index.values(["id"], "job = 'j7'")) == 5
    assert outbox.backlog() == 0
