"""The Serve application's public import path, as users and the KubeRay manifests name it:

    $ serve run services.app:build models=x3d_xs weights=none

It lives in `services.ray_backend.app`, with everything else that imports Ray.
"""

from services.ray_backend.app import JobConsumer, build  # noqa: F401  (the public names)
