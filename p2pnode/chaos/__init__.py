"""Chaos runs: real peer processes, real faults (kill -9, pause, partition), checked."""
