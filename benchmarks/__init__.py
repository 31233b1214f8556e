"""Benchmarks of p2pnode: peers as processes under load (`scripts/bench`)."""
