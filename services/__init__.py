"""reelflow's control plane: CLI now; settings, Redis queue, Ray actors and Serve deployments next."""
