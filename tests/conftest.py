"""Shared test settings."""

from hypothesis import settings

# Property tests must not depend on wall-clock speed: no deadline, fixed example budget.
settings.register_profile("p2pnode", deadline=None, max_examples=200, derandomize=True)
settings.load_profile("p2pnode")
