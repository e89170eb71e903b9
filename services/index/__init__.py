"""Search over every segment's embedding (issue 21).

Segments of jobs and windows of streams go to an outbox in Redis with their embedding, atomically
with their result (services.store.index_outbox); the indexer (indexer.py), a thread of every `up`,
appends them to the vector index (vectors.py) in batches, and keeps the index fast. `reelflow
search`, the HTTP API and the report query it (search.py). Storing results never waits for the
index: while the outbox is full, new segments skip it, counted.
"""
