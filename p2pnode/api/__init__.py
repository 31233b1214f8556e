"""The peer's local HTTP API: the loopback server and its client."""
