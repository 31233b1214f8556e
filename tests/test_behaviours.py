"""The state behaviours driven through a round context alone, with no state machine around them.

Each behaviour is a function of (context, epoch) that reports only by posting events; these
tests hand one a context whose `post` records, and check what it posted and what it changed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import trio
import trio.testing

from p2pnode.consensus import Event, Limits, Timeouts
from p2pnode.consensus.behaviours import liveness_check, proving
from p2pnode.consensus.context import Context
from p2pnode.consensus.protocols import NullTracer, attempt_of
from p2pnode.consensus.voting import verifying
from tests.mocks import (
    GENESIS,
    MemoryJournal,
    MockCollected,
    MockLeader,
    MockLiveness,
    MockPeer,
    MockState,
    MockSync,
    MockVote,
    MockVoting,
)

EPOCH = 7


Ctx = Context[MockState, MockVote, MockPeer, MockCollected]


def context(
    posted: list[Any],
    *,
    leaders: list[str],
    minimum: int = 2,
    journal: MemoryJournal | None = None,
) -> Ctx:
    return Context(
        id_text="a",
        active=GENESIS,
        emit=False,
        attempts=False,
        minimum_provers=minimum,
        sync=MockSync(),
        voting=MockVoting("a"),
        leader=MockLeader(leaders, prove_delay=0.25),
        liveness=MockLiveness(),
        tracer=NullTracer(),
        timeouts=Timeouts(),
        limits=Limits(),
        journal=journal,
        post=lambda event, epoch: posted.append((event, epoch)),
    )


async def test_proving_journals_the_proposal_before_it_reports_the_proof(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: list[str] = []  # the journal's saves, and (with the context's posts) what it posted
    journal = MemoryJournal(log=log)
    ctx = context(log, leaders=["a", "b"], journal=journal)
    ctx.round.collected = MockCollected(1)

    await proving(ctx, EPOCH)

    assert log == ["save", (Event.PROOF_COMPLETE, EPOCH)]
    assert [record.proposal for record in journal.saved] == [ctx.round.proposal]
    assert ctx.book.proposals(1) == {"a": MockState(1, "proved-1", "proposal-1")}


async def test_liveness_from_peers_outside_the_provers_does_not_signal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    posted: list[object] = []
    ctx = context(posted, leaders=["a", "b", "c"], minimum=2)
    ctx.book.add_liveness(1, "a", MockCollected(1))
    ctx.book.add_liveness(1, "stranger", MockCollected(1))

    await liveness_check(ctx, EPOCH)
    assert (Event.PROVER_SIGNAL, EPOCH) not in posted

    ctx.book.add_liveness(1, "b", MockCollected(1))
    await liveness_check(ctx, EPOCH)
    assert posted[-1] == (Event.PROVER_SIGNAL, EPOCH)


async def test_verifying_never_goes_back_to_an_older_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    posted: list[object] = []
    ctx = context(posted, leaders=["a", "b"])
    final = MockState(3, "three")
    assert ctx.adopt(final)
    ctx.round = replace(ctx.round, next_state=MockState(2, "two"))

    await verifying(ctx, EPOCH)

    assert ctx.active == final
    assert ctx.round.next_state is None
    assert posted[-1] == (Event.VERIFICATION_DONE, EPOCH)


@dataclass(frozen=True)
class Attempted:
    attempt: object


class AttemptMethod:
    def attempt(self) -> int:
        return 3


def test_an_attempt_is_read_from_an_attribute_or_a_method_and_anything_else_is_0() -> None:
    assert attempt_of(Attempted(2)) == 2
    assert attempt_of(AttemptMethod()) == 3
    assert [attempt_of(Attempted(v)) for v in (True, -1, "1", None)] == [0, 0, 0, 0]
    assert attempt_of(object()) == 0
