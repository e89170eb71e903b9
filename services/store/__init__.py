"""Everything reelflow keeps in Redis, and nothing else: the key names (`keys`), the embedded
server (`embedded`), connecting (`connection`), the job message and record (`jobs`), the job queue
(`queue`), the live-stream registry (`streams`), and the read-only overviews the CLI, the HTTP API
and the dashboard share (`overview`, `backlog`).
"""
