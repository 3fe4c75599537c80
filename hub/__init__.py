"""EdgeFleet hub: model registry, signing, rollouts, ingest and fleet-wide drift."""
