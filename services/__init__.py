"""reelflow's control plane, in layers that import only downwards (README, "Architecture"):

    cli/  ->  ray_backend/  ->  api/ | report/  ->  worker/  ->  store/  ->  settings, telemetry  ->  pipelines

`services.cli:main` is the `reelflow` command; `services.app:build` the Ray Serve application.
"""
