"""reelflow's control plane: settings, the Redis job queue, the job worker, the Ray pipeline
(decoder actors, Serve model replicas), telemetry and the `reelflow` CLI."""
