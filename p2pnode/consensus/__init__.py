"""The generic round-based BFT consensus engine: no networking, encoding or wall clock inside."""

from p2pnode.consensus.book import Receipt
from p2pnode.consensus.config import Limits, Timeouts
from p2pnode.consensus.errors import EquivocationError, InvalidProposal, ProviderError
from p2pnode.consensus.machine import StateMachine
from p2pnode.consensus.protocols import (
    CommitVotingProvider,
    FinalityListener,
    LeaderProvider,
    LivenessProvider,
    Lock,
    RoundJournal,
    RoundRecord,
    SyncProvider,
    TraceLogger,
    TransitionListener,
    Unique,
    VotingProvider,
)
from p2pnode.consensus.states import Event, State
from p2pnode.consensus.table import TRANSITIONS, Transition
from p2pnode.consensus.view import RoundView

__all__ = [
    "TRANSITIONS",
    "CommitVotingProvider",
    "EquivocationError",
    "Event",
    "FinalityListener",
    "InvalidProposal",
    "LeaderProvider",
    "Limits",
    "LivenessProvider",
    "Lock",
    "ProviderError",
    "Receipt",
    "RoundJournal",
    "RoundRecord",
    "RoundView",
    "State",
    "StateMachine",
    "SyncProvider",
    "Timeouts",
    "TraceLogger",
    "Transition",
    "TransitionListener",
    "Unique",
    "VotingProvider",
]
