"""The worker: the pipeline contract (`pipeline`), the job consumer (`consumer`), the live-stream
manager and runner, the in-process data plane (`in_process`), and the runtime that wires them
(`runtime`). Talks to Redis through `services.store` only; knows nothing of Ray.
"""
