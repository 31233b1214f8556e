"""The running peer: its node, daemon, store, settings and status."""
