"""The engine's two error types: a provider's transient failure, and a proven equivocation."""

from __future__ import annotations


class ProviderError(Exception):
    """A transient provider failure (network, peer, proof): the engine logs it and recovers."""


class EquivocationError(Exception):
    """A voter sent two different votes for one rank and attempt; both are kept as evidence."""

    def __init__(self, voter: str, first: object, second: object) -> None:
        super().__init__(f"voter {voter} sent two different votes for one rank and attempt")
        self.voter = voter
        self.first = first
        self.second = second
