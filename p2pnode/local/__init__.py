"""Peers on this machine: testnet homes, and peer processes to start and stop."""
