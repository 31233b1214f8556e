"""A deterministic multi-peer simulator: engines on an in-memory pubsub with seeded faults."""
