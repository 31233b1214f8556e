"""The engine's errors: transient provider failures, invalid proposals, proven equivocations."""

from __future__ import annotations


class ProviderError(Exception):
    """A transient provider failure (network, peer, proof): the engine logs it and recovers."""


class InvalidProposal(ProviderError):  # noqa: N818 (a verdict on a proposal, not a failure)
    """The proposal a vote was asked for is invalid (a bad proof, say): the engine drops it for
    the rest of the round and votes for another."""

    def __init__(self, proposer: str, frame_id: str, why: str) -> None:
        super().__init__(f"invalid proposal of {proposer}: {why}")
        self.proposer = proposer
        self.frame_id = frame_id


class EquivocationError(Exception):
    """A voter sent two different votes for one rank and attempt; both are kept as evidence."""

    def __init__(self, voter: str, first: object, second: object) -> None:
        super().__init__(f"voter {voter} sent two different votes for one rank and attempt")
        self.voter = voter
        self.first = first
        self.second = second
