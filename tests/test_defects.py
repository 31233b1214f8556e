"""One or more tests per defect of the original that the port fixes (the README lists them).

Each test pins the behaviour the engine promises where the original behaved differently, so each
would fail on the original's behaviour. Every test runs on the `autojump_clock` (a
`MockClock(autojump_threshold=0)`): time is virtual and only moves when every task is blocked,
so virtual times are asserted exactly. Delays are dyadic (0.25, 0.5, ...) so that sums of them
are exact floats; the engine's own retry delays (0.1 doubling) are compared within 1e-9.

The providers are the shared mocks shaped like the original's, wrapped by a `Script` that can
make any provider method block (`Hold`), fail transiently (`ProviderError`) or crash, and
records each call.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from p2pnode.consensus import (
    EquivocationError,
    Event,
    Limits,
    ProviderError,
    Receipt,
    RoundRecord,
    State,
    StateMachine,
    Timeouts,
)
from tests import test_original_suite
from tests.mocks import (
    BACK_TO_COLLECTING,
    BOOT,
    CLEANED_UP,
    GENESIS,
    LEADER2,
    LEADER2_PROPOSAL,
    LEADER3,
    LEADERS,
    LIVENESS_LOOP,
    LIVENESS_TIMEOUT,
    OUTSIDER,
    OWN_PROPOSAL,
    OWN_PROPOSAL_2,
    OWN_VOTE,
    SELF,
    TO_FINALIZING,
    TO_LIVENESS,
    TO_PROVING,
    TO_PUBLISHING,
    TO_VOTING,
    VOTE_LOOP,
    VOTING_TIMEOUT,
    E,
    Machine,
    MemoryJournal,
    MockCollected,
    MockLeader,
    MockLiveness,
    MockPeer,
    MockState,
    MockSync,
    MockVote,
    MockVoting,
    Recorder,
    S,
    Step,
    TraceRecorder,
)

OUTSIDER2 = MockPeer("outsider2")
RETRY_TOLERANCE = 1e-9
"""The engine's retry delays (0.1 s doubling) are not dyadic: sums are compared within this."""


# With the default delays of `build` (sync, collect and prove 0.25 s each, minimum_provers=1):
T_LOADING = 1.0  # the starting timeout
T_COLLECTING = 1.25
T_LIVENESS = 1.5
T_PUBLISHING = 1.75  # = T_VOTING: send_proposal returns at once


# -- purpose-built provider wrappers -----------------------------------------------------------


@dataclass
class Hold:
    """Makes calls of one provider method last `seconds` (longer than any test by default)
    after `skip` calls that pass at once; records when each held call started, was cancelled or
    finished. Finite, so an engine that cannot cancel a held call fails instead of hanging."""

    seconds: float = 1000.0
    skip: int = 0
    started: list[float] = field(default_factory=list)
    cancelled: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    entered: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        if self.skip > 0:
            self.skip -= 1
            return
        self.started.append(trio.current_time())
        self.entered.set()
        try:
            await trio.sleep(self.seconds)
        except trio.Cancelled:
            self.cancelled.append(trio.current_time())
            raise
        self.finished.append(trio.current_time())


@dataclass
class Script:
    """What the providers do before their mock's work, per method name: crash, fail with
    `ProviderError` a number of times, or be held; every call's virtual time is recorded."""

    holds: dict[str, Hold] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    crashes: dict[str, Exception] = field(default_factory=dict)
    calls: dict[str, list[float]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    """Method names in call order (a journal appends "save" here too)."""

    async def enter(self, method: str) -> None:
        self.calls.setdefault(method, []).append(trio.current_time())
        self.log.append(method)
        crash = self.crashes.get(method)
        if crash is not None:
            raise crash
        if self.failures.get(method, 0) > 0:
            self.failures[method] -= 1
            raise ProviderError(f"{method} failed (scripted)")
        hold = self.holds.get(method)
        if hold is not None:
            await hold.run()

    def count(self, method: str) -> int:
        return len(self.calls.get(method, []))


@dataclass
class ScriptedSync(MockSync):
    script: Script = field(default_factory=Script)

    async def synchronize(self, existing: MockState | None) -> MockState:
        await self.script.enter("synchronize")
        return await super().synchronize(existing)


@dataclass
class ScriptedVoting(MockVoting):
    script: Script = field(default_factory=Script)
    quorum_inputs: list[dict[str, MockVote]] = field(default_factory=list)
    """A copy of the votes passed to each is_quorum call."""

    async def send_proposal(self, proposal: MockState) -> None:
        await self.script.enter("send_proposal")
        await super().send_proposal(proposal)

    async def decide_and_send_vote(
        self, proposals: Mapping[str, MockState]
    ) -> tuple[MockPeer, MockVote]:
        await self.script.enter("decide_and_send_vote")
        return await super().decide_and_send_vote(proposals)

    async def is_quorum(self, proposal_votes: Mapping[str, MockVote]) -> bool:
        self.quorum_inputs.append(dict(proposal_votes))
        await self.script.enter("is_quorum")
        return await super().is_quorum(proposal_votes)

    async def finalize_votes(
        self, proposals: Mapping[str, MockState], proposal_votes: Mapping[str, MockVote]
    ) -> tuple[MockState, MockPeer]:
        await self.script.enter("finalize_votes")
        return await super().finalize_votes(proposals, proposal_votes)

    async def send_confirmation(self, finalized: MockState) -> None:
        await self.script.enter("send_confirmation")
        await super().send_confirmation(finalized)


@dataclass
class ScriptedLeader(MockLeader):
    script: Script = field(default_factory=Script)

    async def get_next_leaders(self, prior: MockState | None) -> list[MockPeer]:
        await self.script.enter("get_next_leaders")
        return await super().get_next_leaders(prior)

    async def prove_next_state(
        self, prior: MockState | None, collected: MockCollected
    ) -> MockState:
        await self.script.enter("prove_next_state")
        return await super().prove_next_state(prior, collected)


@dataclass
class ScriptedLiveness(MockLiveness):
    script: Script = field(default_factory=Script)

    async def collect(self) -> MockCollected:
        await self.script.enter("collect")
        return await super().collect()

    async def send_liveness(self, prior: MockState | None, collected: MockCollected) -> None:
        await self.script.enter("send_liveness")
        await super().send_liveness(prior, collected)


@dataclass
class Harness:
    """A machine for peer leader1 with scripted providers, a tracer and a recording listener."""

    sm: Machine
    script: Script
    sync: ScriptedSync
    voting: ScriptedVoting
    leader: ScriptedLeader
    liveness: ScriptedLiveness
    tracer: TraceRecorder
    recorder: Recorder


def build(
    minimum_provers: int = 1,
    quorum_size: int = 3,
    *,
    script: Script | None = None,
    emit: bool = True,
    delay: float = 0.25,
    timeouts: Timeouts | None = None,
    limits: Limits | None = None,
    journal: MemoryJournal | None = None,
) -> Harness:
    """The constructor with scripted providers; sync, collect and prove take `delay`."""
    script = script if script is not None else Script()
    sync = ScriptedSync(delay=delay, script=script)
    voting = ScriptedVoting("leader1", quorum_size=quorum_size, script=script)
    leader = ScriptedLeader(list(LEADERS), prove_delay=delay, script=script)
    liveness = ScriptedLiveness(collect_delay=delay, script=script)
    tracer = TraceRecorder()
    if journal is not None:
        journal.log = script.log
    sm: Machine = StateMachine(
        SELF,
        GENESIS,
        emit,
        minimum_provers,
        sync,
        voting,
        leader,
        liveness,
        tracer,
        timeouts=timeouts,
        limits=limits,
        journal=journal,
    )
    recorder = Recorder()
    sm.add_listener(recorder)
    return Harness(sm, script, sync, voting, leader, liveness, tracer, recorder)


@asynccontextmanager
async def started(h: Harness, bound: float = 60) -> AsyncIterator[trio.Nursery]:
    """Run the machine in a nursery and start it; the whole block has `bound` virtual seconds."""
    with trio.fail_after(bound):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            yield nursery


def times_of(recorder: Recorder, step: Step) -> list[float]:
    """Virtual times of every occurrence of `step`."""
    return [t for s, t in zip(recorder.transitions, recorder.times, strict=True) if s == step]


def provider_errors(tracer: TraceRecorder) -> list[BaseException | None]:
    return [err for _, err in tracer.errors if isinstance(err, ProviderError)]


# -- 1. stop is handled promptly from every state ----------------------------------------------


@pytest.mark.parametrize(
    ("state", "method", "skip", "minimum_provers", "quorum_size"),
    [
        pytest.param(S.STARTING, None, 0, 1, 3, id="starting"),
        pytest.param(S.LOADING, "synchronize", 0, 1, 3, id="loading"),
        pytest.param(S.COLLECTING, "collect", 0, 1, 3, id="collecting"),
        # The first send_liveness (in collecting) passes; the re-announcement on the first
        # liveness timeout is held.
        pytest.param(S.LIVENESS_CHECK, "send_liveness", 1, 2, 3, id="liveness_check"),
        pytest.param(S.PROVING, "prove_next_state", 0, 1, 3, id="proving"),
        pytest.param(S.PUBLISHING, "send_proposal", 0, 1, 3, id="publishing"),
        pytest.param(S.VOTING, "decide_and_send_vote", 0, 1, 3, id="voting"),
        pytest.param(S.FINALIZING, "finalize_votes", 0, 1, 1, id="finalizing"),
        pytest.param(S.VERIFYING, "send_confirmation", 0, 1, 1, id="verifying"),
    ],
)
async def test_stop_is_prompt_in_every_state(
    autojump_clock: trio.testing.MockClock,
    state: State,
    method: str | None,
    skip: int,
    minimum_provers: int,
    quorum_size: int,
) -> None:
    """Defect 1: behaviours blocked the event loop, so stop waited for them. stop() in any state,
    also while a provider call is in flight, enters stopping at the same virtual instant, reaches
    stopped at that instant, cancels the call (it never completes) and makes run() return."""
    script = Script()
    hold = Hold(skip=skip)
    if method is not None:
        script.holds[method] = hold
    h = build(minimum_provers, quorum_size, script=script)
    async with started(h):
        if method is None:
            await h.recorder.wait_for(state)
        else:
            await hold.entered.wait()
        await trio.sleep(0.25)  # well inside the state (every timeout is >= 1 s)
        assert h.sm.get_state() is state
        assert hold.cancelled == []
        asked_at = trio.current_time()
        before = len(h.recorder.transitions)
        h.sm.stop()
        await h.recorder.wait_for(State.STOPPED)
        assert h.recorder.transitions[before:] == [(state, S.STOPPING, E.STOP), CLEANED_UP]
        assert h.recorder.times[before:] == [asked_at, asked_at]
    # The nursery could only close because run() returned by itself.
    assert trio.current_time() == asked_at
    assert h.sm.get_state() is State.STOPPED
    if method is not None:
        assert hold.started == [asked_at - 0.25]
        assert hold.cancelled == [asked_at]
        assert hold.finished == []
    h.sm.close()  # already stopped: nothing more happens
    assert h.recorder.transitions[-1] == CLEANED_UP
    assert h.tracer.errors == []


async def test_stop_cancels_held_calls_without_side_effects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 1: a stop while send_proposal is in flight cancels it before it publishes: no
    proposal is sent, and nothing is voted after the stop."""
    script = Script(holds={"send_proposal": Hold(seconds=0.5)})
    h = build(script=script)
    async with started(h):
        await script.holds["send_proposal"].entered.wait()
        assert trio.current_time() == T_PUBLISHING
        await trio.sleep(0.25)
        h.sm.stop()
        await h.recorder.wait_for(State.STOPPED)
        await trio.sleep(5)  # the held call would have finished long ago
    assert h.voting.proposals_sent == []
    assert h.voting.votes_sent == []
    assert script.holds["send_proposal"].cancelled == [T_PUBLISHING + 0.25]
    assert h.recorder.transitions[-2:] == [(S.PUBLISHING, S.STOPPING, E.STOP), CLEANED_UP]


async def test_stop_is_prompt_for_a_follower(autojump_clock: trio.testing.MockClock) -> None:
    """Defect 1: a follower (not among the next provers) stays in loading and keeps syncing;
    stop() while its second sync is in flight stops it at that very instant and cancels it."""
    hold = Hold(skip=1)  # the first sync passes, the next one is held
    h = build(script=Script(holds={"synchronize": hold}))
    h.leader.leaders = ["leader2", "leader3"]
    async with started(h):
        await hold.entered.wait()
        await trio.sleep(0.125)
        asked_at = trio.current_time()
        assert h.sm.get_state() is State.LOADING
        assert h.sync.calls == 1
        h.sm.stop()
        await h.recorder.wait_for(State.STOPPED)
        assert h.recorder.transitions[-2:] == [(S.LOADING, S.STOPPING, E.STOP), CLEANED_UP]
        assert h.recorder.times[-2:] == [asked_at, asked_at]
    assert trio.current_time() == asked_at
    assert not h.recorder.reached(State.COLLECTING)
    assert hold.cancelled == [asked_at]
    assert hold.finished == []
    assert h.sync.calls == 1  # the held call never reached the mock
    h.sm.close()


# -- 2. timeouts count from entry; stale timeouts and results are dropped ----------------------


async def test_starting_timeout_is_exactly_one_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 2 (and 1): the starting state's init_complete fires exactly 1.0 s after start,
    and loading's sync_complete exactly when the 0.25 s synchronize returns."""
    h = build(minimum_provers=2)
    async with started(h):
        started_at = trio.current_time()
        await h.recorder.wait_for(State.COLLECTING)
        assert h.recorder.transitions == BOOT
        assert [t - started_at for t in h.recorder.times] == [0.0, 1.0, 1.25]
        h.sm.close()


async def test_timeout_bounds_a_slow_behaviour_from_entry(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 1/2: the original started a state's timeout only after its behaviour returned. A 4.5 s
    collect is cut off by the 1 s collecting timeout counted from entry; liveness_check's 1 s
    timeouts then tick from its own entry while the next collect runs, without cancelling it."""
    hold = Hold(seconds=4.5)
    h = build(script=Script(holds={"collect": hold}), delay=0.25)
    async with started(h):
        await h.recorder.wait_for(State.PROVING)
        entered = T_COLLECTING
        assert h.recorder.transitions[:4] == [*BOOT, TO_LIVENESS]
        assert h.recorder.times[3] == entered + 1.0  # the collecting timeout, from entry
        assert hold.started == [entered, entered + 1.0]
        assert hold.cancelled == [entered + 1.0]  # leaving collecting cancelled it
        assert hold.finished == [entered + 5.5]  # self-loops never cancelled the second
        assert times_of(h.recorder, LIVENESS_TIMEOUT) == [entered + 2.0 + i for i in range(4)]
        assert times_of(h.recorder, TO_PROVING) == [entered + 5.5 + 0.25]
        h.sm.close()


async def test_left_states_timeout_does_not_cut_publishing_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 2: prove takes 119.875 s of proving's 120 s and send_proposal 0.5 s. Proving's
    timeout (due 0.125 s into publishing) belongs to a left state and is dropped: publishing ends
    by publish_complete after 0.5 s with exactly one proposal sent, never by publish_timeout."""
    script = Script(
        holds={"prove_next_state": Hold(seconds=119.875), "send_proposal": Hold(seconds=0.5)}
    )
    h = build(script=script, delay=0.25)
    h.leader.prove_delay = 0.0
    async with started(h, 200):
        await h.recorder.wait_for(State.VOTING)
        await trio.sleep(0.75)  # well past proving's 120 s, before voting's first timeout
        proving_at = times_of(h.recorder, TO_PROVING)[0]
        assert proving_at == T_LIVENESS
        assert h.recorder.transitions[:8] == [
            *BOOT,
            TO_LIVENESS,
            TO_PROVING,
            TO_PUBLISHING,
            TO_VOTING,
            VOTE_LOOP,
        ]
        assert h.recorder.times[5] == proving_at + 119.875
        assert h.recorder.times[6] == proving_at + 120.375
        assert all(event is not E.PUBLISH_TIMEOUT for _, _, event in h.recorder.transitions)
        assert h.voting.proposals_sent == [OWN_PROPOSAL]
        assert h.sm.get_state() is State.VOTING
        h.sm.close()


async def test_same_instant_result_and_timeout_one_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 2: prove takes exactly proving's 120 s, so its result and proving's timeout are
    raised at the same instant. Whichever is handled first moves the machine; the other belongs to
    the left state and is dropped. Trio picks the order: if proof_complete wins, the stale
    publish_timeout must not cut publishing short (the original voted without publishing)."""
    h = build()
    h.leader.prove_delay = 120.0
    async with started(h, 200):
        await h.recorder.wait_for(State.VOTING)
        await trio.sleep(0.5)
        done_at = T_LIVENESS + 120.0
        after = h.recorder.transitions[5:]
        dropped = [t for t in h.tracer.traces if t.startswith("dropped ")]
        if after[0] == TO_PUBLISHING:
            assert after[:3] == [TO_PUBLISHING, TO_VOTING, VOTE_LOOP]
            assert h.recorder.times[5:7] == [done_at, done_at]
            assert h.voting.proposals_sent == [OWN_PROPOSAL]
            assert len(dropped) == 1
            assert "publish_timeout" in dropped[0]
        else:
            assert after[0] == (S.PROVING, S.VOTING, E.PUBLISH_TIMEOUT)
            assert h.recorder.times[5] == done_at
            assert h.voting.proposals_sent == []
            assert len(dropped) == 1
            assert "proof_complete" in dropped[0]
        assert h.sm.get_state() is State.VOTING
        h.sm.close()


async def test_external_events_are_handled_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 2: events sent back to back are handled in the order sent, each on the state the
    previous one produced: start, init_complete, sync_complete, collection_done take the machine
    to liveness_check at 0 s (reordered, some would find no transition and be lost); the held
    synchronize of the left loading state is cancelled and its result never arrives."""
    hold = Hold()
    h = build(minimum_provers=2, script=Script(holds={"synchronize": hold}))
    async with started(h):
        h.sm.send_event(Event.INIT_COMPLETE)
        h.sm.send_event(Event.SYNC_COMPLETE)
        h.sm.send_event(Event.COLLECTION_DONE)
        await h.recorder.wait_for(State.LIVENESS_CHECK)
        await trio.sleep(0.75)
        # Then liveness_check collects (0.25 s) and announces: its own liveness arrives.
        assert h.recorder.transitions == [*BOOT, TO_LIVENESS, LIVENESS_LOOP]
        assert h.recorder.times == [0.0] * 4 + [0.25]
        assert h.liveness.sent == 1
        assert hold.started == [0.0]
        assert hold.cancelled == [0.0]
        assert h.sm.get_state() is State.LIVENESS_CHECK
        h.sm.close()


# -- 3. never a second vote for one rank -------------------------------------------------------


async def test_self_loops_never_abort_or_repeat_an_in_flight_vote(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 3: decide_and_send_vote takes 2 s; proposal_received and vote_received (received
    and sent as events) and two voting_timeout ticks happen while it is in flight. It is called
    exactly once, completes (never cancelled), and is not called again afterwards."""
    hold = Hold(seconds=2.0)
    h = build(quorum_size=3, script=Script(holds={"decide_and_send_vote": hold}))
    async with started(h):
        await hold.entered.wait()
        voting_at = trio.current_time()
        assert voting_at == T_PUBLISHING
        await trio.sleep(0.25)
        assert h.sm.receive_proposal(LEADER2, LEADER2_PROPOSAL) is Receipt.ACCEPTED
        await trio.sleep(0.25)
        vote2 = MockVote(1, "leader2", "proposal-leader2")
        assert h.sm.receive_vote(LEADER2, LEADER2, vote2) is Receipt.ACCEPTED
        await trio.sleep(0.25)
        h.sm.send_event(Event.PROPOSAL_RECEIVED)
        h.sm.send_event(Event.VOTE_RECEIVED)
        await trio.sleep(5.0)
        loops = [t for t in h.recorder.transitions if t[0] is S.VOTING]
        assert all(to is S.VOTING for _, to, _ in loops)  # never left voting
        assert (S.VOTING, S.VOTING, E.PROPOSAL_RECEIVED) in loops
        assert times_of(h.recorder, VOTING_TIMEOUT)[:2] == [voting_at + 1.0, voting_at + 2.0]
        assert h.script.count("decide_and_send_vote") == 1
        assert hold.cancelled == []
        assert hold.finished == [voting_at + 2.0]
        assert h.voting.votes_sent == [OWN_VOTE]
        assert h.sm.round_view().votes == {"leader1": "leader1", "leader2": "leader2"}
        assert h.sm.get_state() is State.VOTING
        h.sm.close()


async def test_no_second_vote_after_induce_sync(autojump_clock: trio.testing.MockClock) -> None:
    """Defect 3: induce_sync while decide_and_send_vote is in flight leaves voting (cancelling
    the call, whose vote may already be out); back in voting at the same rank the machine never
    calls decide_and_send_vote again."""
    hold = Hold(seconds=2.0)
    h = build(quorum_size=3, script=Script(holds={"decide_and_send_vote": hold}))
    async with started(h):
        await hold.entered.wait()
        await trio.sleep(0.5)
        before = len(h.recorder.transitions)
        h.sm.send_event(Event.INDUCE_SYNC)
        await h.recorder.wait_for_transition(TO_VOTING, before)
        assert h.recorder.transitions[before] == (S.VOTING, S.LOADING, E.INDUCE_SYNC)
        assert hold.cancelled == [T_PUBLISHING + 0.5]
        assert h.sm.round_view().target_rank == 1
        assert h.sm.round_view().voted
        await trio.sleep(5.0)  # five voting timeouts and every re-evaluation
        assert h.sm.get_state() is State.VOTING
        assert h.script.count("decide_and_send_vote") == 1
        assert h.voting.votes_sent == []  # the only call was cancelled
        assert h.sm.round_view().target_rank == 1
        h.sm.close()


@pytest.mark.parametrize(
    ("journaled_rank", "votes"),
    [pytest.param(1, 0, id="voted-at-rank-1"), pytest.param(0, 1, id="older-record")],
)
async def test_journal_prevents_a_second_vote_after_restart(
    autojump_clock: trio.testing.MockClock, journaled_rank: int, votes: int
) -> None:
    """Defect 3: a machine built with a journal whose record says it voted at rank 1 never calls
    decide_and_send_vote at rank 1 (a restart does not re-vote). With an older record it votes
    once, and saves its record (voted at rank 1) before it calls decide_and_send_vote; its
    proposal was journaled before that, when it was proven."""
    journal = MemoryJournal(RoundRecord(journaled_rank, 0, True))
    h = build(quorum_size=3, journal=journal)
    async with started(h):
        await h.recorder.wait_for(State.VOTING)
        assert h.sm.receive_proposal(LEADER2, LEADER2_PROPOSAL) is Receipt.ACCEPTED
        await trio.sleep(3.5)
        assert h.sm.get_state() is State.VOTING
        assert h.sm.round_view().target_rank == 1
        assert h.sm.round_view().voted
        assert h.script.count("decide_and_send_vote") == votes
        assert len(h.voting.votes_sent) == votes
        if votes:
            assert journal.saved == [
                RoundRecord(1, 0, False, proposal=OWN_PROPOSAL),
                RoundRecord(1, 0, True, proposal=OWN_PROPOSAL),
            ]
            log = h.script.log
            saves = [i for i, entry in enumerate(log) if entry == "save"]
            assert saves[1] < log.index("decide_and_send_vote")
        else:
            assert "decide_and_send_vote" not in h.script.log
        h.sm.close()


# -- 4. vote conflicts are found by content ----------------------------------------------------


async def test_equivocation_is_detected_by_content_and_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 4: MockVote.identity() is the voter (an identity that never differs), so only the
    content tells two votes apart. A second, different vote by leader2 at rank 1 raises
    EquivocationError with both votes; it is never counted (it would complete a quorum of 2 for
    leader1's proposal). An equal duplicate (a new object) is DUPLICATE and raises nothing."""
    h = build(minimum_provers=1, quorum_size=2)
    first = MockVote(1, "leader2", "proposal-leader2")
    second = MockVote(1, "leader2", "proposal-1")
    async with started(h):
        await h.recorder.wait_for_transition(VOTE_LOOP)
        assert h.voting.votes_sent == [OWN_VOTE]
        assert h.sm.receive_vote(LEADER2, LEADER2, first) is Receipt.ACCEPTED
        await trio.sleep(0.125)
        with pytest.raises(EquivocationError) as caught:
            h.sm.receive_vote(SELF, LEADER2, second)
        assert caught.value.first is first
        assert caught.value.second is second
        assert caught.value.voter == "leader2"
        duplicate = MockVote(1, "leader2", "proposal-leader2")
        assert duplicate is not first
        assert h.sm.receive_vote(LEADER2, LEADER2, duplicate) is Receipt.DUPLICATE
        await trio.sleep(3.0)  # three voting timeouts re-check the quorum
        assert not h.recorder.reached(State.FINALIZING)
        assert h.sm.get_state() is State.VOTING
        assert h.voting.quorum_inputs, "is_quorum was consulted"
        assert all(inputs.get("leader2", first) is first for inputs in h.voting.quorum_inputs)
        assert h.voting.quorum_inputs[-1] == {"leader1": OWN_VOTE, "leader2": first}
        assert h.sm.round_view().equivocators == ("leader2",)
        h.sm.close()


async def test_equal_vote_is_duplicate_before_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 4: the original compared pointers, so an equal copy of a vote was a conflict; ours
    keeps the first and calls the copy DUPLICATE (before start too). A vote of the same voter
    and rank for another proposal is an equivocation carrying both votes; another rank is not."""
    h = build()
    vote = MockVote(1, "leader3", "proposal-1")
    assert h.sm.receive_vote(SELF, LEADER3, vote) is Receipt.ACCEPTED
    assert h.sm.receive_vote(SELF, LEADER3, MockVote(1, "leader3", "proposal-1")) is (
        Receipt.DUPLICATE
    )
    other = MockVote(1, "leader3", "proposal-leader2")
    with pytest.raises(EquivocationError) as caught:
        h.sm.receive_vote(SELF, LEADER3, other)
    assert (caught.value.first, caught.value.second) == (vote, other)
    assert caught.value.first is vote
    # A vote of the same voter at another rank is no conflict.
    assert h.sm.receive_vote(SELF, LEADER3, MockVote(2, "leader3", "proposal-2")) is (
        Receipt.ACCEPTED
    )
    h.sm.close()


# -- 5. pruning and bounds ---------------------------------------------------------------------


async def test_finalizing_prunes_and_the_window_moves(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 5: after rank 1 is finalized everything stored for rank <= 1 is gone and late
    messages for it are STALE (not stored); the window of kept ranks is (finalized,
    finalized + ranks_ahead]: a message beyond it is TOO_FAR_AHEAD and not stored."""
    h = build(minimum_provers=2, quorum_size=2, limits=Limits(ranks_ahead=4))
    # Before start, the finalized rank is genesis' 0: ranks 1..4 are kept, 5 is too far ahead.
    assert h.sm.receive_liveness_check(LEADER2, MockCollected(1)) is Receipt.ACCEPTED
    assert h.sm.receive_proposal(LEADER2, LEADER2_PROPOSAL) is Receipt.ACCEPTED
    vote2 = MockVote(1, "leader2", "proposal-1")
    assert h.sm.receive_vote(LEADER2, LEADER2, vote2) is Receipt.ACCEPTED
    rank2 = MockState(2, "leader3-2", "proposal-leader3-2")
    assert h.sm.receive_proposal(LEADER3, rank2) is Receipt.ACCEPTED
    assert h.sm.receive_proposal(LEADER3, MockState(5, "leader3-5")) is Receipt.TOO_FAR_AHEAD
    # liveness, 2 proposals, a vote and its voter's reach record.
    assert h.sm.stored_messages() == 5
    async with started(h):
        await h.recorder.wait_for_transition(BACK_TO_COLLECTING)
        assert h.sm.get_active_state() == OWN_PROPOSAL
        await h.recorder.wait_for_transition(TO_LIVENESS, len(BOOT) + 1)
        await trio.sleep(0.5)  # rank 2 waits for a second live prover
        assert h.sm.get_state() is State.LIVENESS_CHECK
        view = h.sm.round_view()
        assert (view.finalized_rank, view.target_rank) == (1, 2)
        # What is left: leader3's rank-2 proposal and this peer's rank-2 liveness.
        assert view.proposals == {"leader3": "leader3-2"}
        assert view.live == ("leader1",)
        assert h.sm.stored_messages() == 2

        late_vote = MockVote(1, "leader3", "proposal-1")
        assert h.sm.receive_liveness_check(LEADER3, MockCollected(1)) is Receipt.STALE
        assert h.sm.receive_proposal(LEADER3, MockState(1, "late-1")) is Receipt.STALE
        assert h.sm.receive_vote(SELF, LEADER3, late_vote) is Receipt.STALE
        assert h.sm.receive_confirmation(LEADER3, OWN_PROPOSAL) is Receipt.STALE
        assert h.sm.receive_vote(SELF, LEADER2, vote2) is Receipt.STALE
        assert h.sm.stored_messages() == 2

        far = 1 + 4 + 1
        far_vote = MockVote(far, "leader3", "p")
        assert h.sm.receive_liveness_check(LEADER3, MockCollected(far)) is (Receipt.TOO_FAR_AHEAD)
        assert h.sm.receive_proposal(LEADER3, MockState(far, "f")) is Receipt.TOO_FAR_AHEAD
        assert h.sm.receive_vote(SELF, LEADER3, far_vote) is Receipt.TOO_FAR_AHEAD
        assert h.sm.receive_confirmation(LEADER3, MockState(far, "f")) is (Receipt.TOO_FAR_AHEAD)
        assert h.sm.stored_messages() == 2
        # The window moved with the finalized rank: rank 5 is kept now.
        assert h.sm.receive_proposal(LEADER3, MockState(5, "leader3-5")) is Receipt.ACCEPTED
        assert h.sm.stored_messages() == 3
        h.sm.close()


async def test_senders_per_rank_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """Defect 5: any peer could create per-rank entries without bound. With
    Limits(senders_per_rank=3), a fourth distinct sender at one rank gets FULL for liveness,
    proposals and votes, and nothing more is stored."""
    h = build(minimum_provers=2, limits=Limits(senders_per_rank=3))
    async with started(h):
        await h.recorder.wait_for(State.LIVENESS_CHECK)
        base = h.sm.stored_messages()
        peers = [MockPeer(f"peer{i}") for i in range(6)]
        live = [h.sm.receive_liveness_check(p, MockCollected(2)) for p in peers]
        proposed = [h.sm.receive_proposal(p, MockState(2, f"{p.name}-2")) for p in peers]
        voted = [h.sm.receive_vote(p, p, MockVote(2, p.name, "x")) for p in peers]
        for receipts in (live, proposed, voted):
            assert receipts == [Receipt.ACCEPTED] * 3 + [Receipt.FULL] * 3
        # 3 liveness + 3 proposals + 3 votes + 3 voters' reach records.
        assert h.sm.stored_messages() == base + 12
        assert h.sm.get_state() is State.LIVENESS_CHECK
        h.sm.close()


async def test_a_sync_jump_prunes_every_rank_at_or_below(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 5: the original pruned one rank at a time. When a sync jumps the finalized rank from 0
    to 3, everything stored for ranks 1, 2 and 3 is dropped at once; rank 4 is kept."""
    h = build(minimum_provers=3)
    for rank in (1, 2, 3, 4):
        assert h.sm.receive_liveness_check(LEADER2, MockCollected(rank)) is Receipt.ACCEPTED
    assert h.sm.receive_proposal(LEADER2, MockState(2, "leader2-2")) is Receipt.ACCEPTED
    assert h.sm.stored_messages() == 5
    synced = MockState(3, "synced-3", "proposal-3")
    h.sync.state = synced
    async with started(h):
        await h.recorder.wait_for(State.LIVENESS_CHECK)
        assert h.sm.get_active_state() == synced
        view = h.sm.round_view()
        assert (view.finalized_rank, view.target_rank) == (3, 4)
        assert view.live == ("leader1", "leader2")
        assert h.sm.stored_messages() == 2  # rank 4: leader2's and its own liveness
        assert h.sm.receive_liveness_check(LEADER3, MockCollected(2)) is Receipt.STALE
        assert h.sm.receive_proposal(LEADER3, MockState(3, "late-3")) is Receipt.STALE
        assert h.sm.stored_messages() == 2
        h.sm.close()


# -- 6. one target rank per round --------------------------------------------------------------


async def test_round_two_uses_one_target_rank(autojump_clock: trio.testing.MockClock) -> None:
    """Defect 6: the original stored own liveness under collected.rank(), counted it under rank+1.
    With a collect() that always returns rank 1 (like the original's mock), minimum_provers=1 and
    self-delivery on, round 2 still passes liveness_check (own liveness stored under target 2),
    proves, and publishes its own proposal in publishing (publish_complete, not a timeout)."""
    h = build(minimum_provers=1, quorum_size=1)
    async with started(h):
        await h.recorder.wait_for_transition(BACK_TO_COLLECTING)
        first_end = len(h.recorder.transitions)
        assert h.sm.get_active_state() == OWN_PROPOSAL
        await h.recorder.wait_for_transition(TO_PROVING, first_end)
        view = h.sm.round_view()
        assert (view.target_rank, view.live) == (2, ("leader1",))
        await h.recorder.wait_for_transition(BACK_TO_COLLECTING, first_end)
        assert h.recorder.transitions[first_end:] == [
            TO_LIVENESS,
            TO_PROVING,
            TO_PUBLISHING,
            TO_VOTING,
            VOTE_LOOP,
            TO_FINALIZING,
            (S.FINALIZING, S.VERIFYING, E.AGGREGATION_DONE),
            BACK_TO_COLLECTING,
        ]
        # Round 2: collect 0.25 s, prove 0.25 s, the rest at once.
        assert h.recorder.times[first_end:] == [2.0, 2.0] + [2.25] * 6
        assert h.voting.proposals_sent == [OWN_PROPOSAL, OWN_PROPOSAL_2]
        assert h.voting.votes_sent == [OWN_VOTE, MockVote(2, "leader1", "proposal-2")]
        assert h.sm.get_active_state() == OWN_PROPOSAL_2
        assert h.liveness.round == 1  # collect() returned rank 1 in round 2 too
        h.sm.close()


# -- 7. liveness counts only listed provers ----------------------------------------------------


async def test_unlisted_liveness_never_counts(autojump_clock: trio.testing.MockClock) -> None:
    """Defect 7: with minimum_provers=2, liveness from peers outside the next-prover list (one
    stored before the list was known, one refused after) never triggers prover_signal: the
    machine is still in liveness_check after 5 s of timeouts. A listed prover's liveness
    triggers it at the very instant it arrives."""
    h = build(minimum_provers=2)
    assert h.sm.receive_liveness_check(OUTSIDER, MockCollected(1)) is Receipt.ACCEPTED
    async with started(h):
        await h.recorder.wait_for(State.LIVENESS_CHECK)
        assert trio.current_time() == T_LIVENESS
        assert h.sm.receive_liveness_check(OUTSIDER2, MockCollected(1)) is (Receipt.NOT_A_PROVER)
        await trio.sleep(5.25)
        assert h.sm.get_state() is State.LIVENESS_CHECK
        assert h.recorder.transitions == [*BOOT, TO_LIVENESS, *[LIVENESS_TIMEOUT] * 5]
        assert h.sm.round_view().live == ("leader1",)  # the outsider's is not counted
        arrived = trio.current_time()
        assert h.sm.receive_liveness_check(LEADER3, MockCollected(1)) is Receipt.ACCEPTED
        await h.recorder.wait_for(State.PROVING)
        assert h.recorder.transitions[-2:] == [LIVENESS_LOOP, TO_PROVING]
        assert h.recorder.times[-2:] == [arrived, arrived]
        h.sm.close()


# -- 8. a failed collect does not crash --------------------------------------------------------


async def test_failed_collect_is_retried_not_a_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 8: the original dereferenced a nil `collected` after a failed collect. collect fails 5
    times: retries back off 0.1, 0.2, 0.4 s; the 0.8 s wait is cut by the collecting timeout,
    liveness_check (with nothing collected) collects again, and the machine proves once collect
    succeeds. Only the 5 ProviderErrors are logged; it never stops."""
    script = Script(failures={"collect": 5})
    h = build(script=script)
    async with started(h):
        await h.recorder.wait_for(State.PROVING)
        t = T_COLLECTING
        assert script.calls["collect"] == pytest.approx(
            [t, t + 0.1, t + 0.3, t + 0.7, t + 1.0, t + 1.1], abs=RETRY_TOLERANCE
        )
        assert h.recorder.transitions == [*BOOT, TO_LIVENESS, LIVENESS_LOOP, TO_PROVING]
        assert h.recorder.times[3] == t + 1.0
        assert h.recorder.times[4:] == pytest.approx([t + 1.35] * 2, abs=RETRY_TOLERANCE)
        assert len(provider_errors(h.tracer)) == 5
        assert len(h.tracer.errors) == 5
        assert all(message.startswith("collect failed") for message, _ in h.tracer.errors)
        await h.recorder.wait_for(State.VOTING)
        assert not h.recorder.reached(State.STOPPED)
        assert h.voting.proposals_sent == [OWN_PROPOSAL]
        h.sm.close()


# -- 9. listeners run without a lock; close() notifies -----------------------------------------


@dataclass
class ReentrantListener:
    """Reads the machine and sends it an event from inside on_transition."""

    sm: Machine
    seen: list[tuple[State, State, int, float]] = field(default_factory=list)

    def on_transition(self, from_: State, to: State, event: Event) -> None:
        self.seen.append(
            (to, self.sm.get_state(), self.sm.get_transition_count(), self.sm.get_state_time())
        )
        if to is State.STARTING:
            self.sm.send_event(Event.INIT_COMPLETE)  # skip the 1 s wait


async def test_listener_can_call_the_machine_and_close_notifies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 9: listeners were called under the lock (get_state deadlocked) and close() did not
    notify them. A listener calling get_state(), get_transition_count(), get_state_time() and
    send_event() inside on_transition sees the new state and count, its event is handled (loading
    at 0 s instead of 1 s), and close() tells it of the move to stopped."""
    h = build(minimum_provers=2)
    probe = ReentrantListener(h.sm)
    h.sm.add_listener(probe)
    async with started(h):
        await h.recorder.wait_for(State.LIVENESS_CHECK)
        await trio.sleep(2.25)
        assert h.recorder.transitions == [*BOOT, TO_LIVENESS, *[LIVENESS_TIMEOUT] * 2]
        assert h.recorder.times == [0.0, 0.0, 0.25, 0.5, 1.5, 2.5]
        h.sm.close()
        assert h.recorder.transitions[-1] == (S.LIVENESS_CHECK, S.STOPPED, E.STOP)
    expected = [
        (to, to, n, 0.0 if from_ is not to else t - 0.5)
        for n, ((from_, to, _), t) in enumerate(
            zip(h.recorder.transitions, h.recorder.times, strict=True), 1
        )
    ]
    assert probe.seen == expected
    assert probe.seen[-1] == (State.STOPPED, State.STOPPED, 7, 0.0)
    assert h.sm.get_state() is State.STOPPED
    assert h.sm.get_transition_count() == 7
    assert h.tracer.errors == []


# -- 10. transient errors are retried with bounded backoff -------------------------------------


async def test_sync_errors_are_retried_with_doubling_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 10: a failed sync was swallowed (Loading stalled 10 h). synchronize fails three
    times then succeeds: it is retried after exactly 0.1, 0.2 and 0.4 s (Timeouts.retry
    doubling), each failure is logged, and loading completes at once after the success."""
    script = Script(failures={"synchronize": 3})
    h = build(minimum_provers=2, script=script)
    async with started(h):
        await h.recorder.wait_for(State.COLLECTING)
        calls = script.calls["synchronize"]
        assert calls[0] == T_LOADING
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert gaps == pytest.approx([0.1, 0.2, 0.4], abs=RETRY_TOLERANCE)
        assert h.recorder.transitions == BOOT
        # The successful call takes the mock's 0.25 s; then loading completes at once.
        assert h.recorder.times[2] == pytest.approx(calls[-1] + 0.25, abs=RETRY_TOLERANCE)
        assert len(provider_errors(h.tracer)) == 3
        assert h.sync.calls == 1  # the one that got through
        h.sm.close()


async def test_retry_backoff_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    """Defect 10: the retry delay doubles up to Timeouts.retry_max and stays there: with
    retry=0.125 and retry_max=0.5, seven failures are followed by waits of 0.125, 0.25, 0.5,
    0.5, 0.5, 0.5, 0.5 s."""
    script = Script(failures={"synchronize": 7})
    timeouts = Timeouts(retry=0.125, retry_max=0.5)
    limits = Limits(failures_before_sync=100)
    h = build(minimum_provers=2, script=script, timeouts=timeouts, limits=limits)
    async with started(h):
        await h.recorder.wait_for(State.COLLECTING)
        calls = script.calls["synchronize"]
        assert calls[0] == T_LOADING
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert gaps == [0.125, 0.25, 0.5, 0.5, 0.5, 0.5, 0.5]
        assert h.recorder.transitions == BOOT
        assert h.recorder.times[2] == calls[-1] + 0.25
        assert len(provider_errors(h.tracer)) == 7
        h.sm.close()


async def test_repeated_failures_in_a_round_induce_sync(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 10: with Limits(failures_before_sync=3), the third failed collect of a round
    induces a sync (collecting -> loading on induce_sync) at that instant; after the sync the
    next collect succeeds and the machine proves."""
    script = Script(failures={"collect": 3})
    h = build(script=script, limits=Limits(failures_before_sync=3))
    async with started(h):
        await h.recorder.wait_for(State.PROVING)
        t = T_COLLECTING
        assert h.recorder.transitions == [
            *BOOT,
            (S.COLLECTING, S.LOADING, E.INDUCE_SYNC),
            (S.LOADING, S.COLLECTING, E.SYNC_COMPLETE),
            TO_LIVENESS,
            TO_PROVING,
        ]
        assert script.calls["collect"] == pytest.approx(
            [t, t + 0.1, t + 0.3, t + 0.55], abs=RETRY_TOLERANCE
        )
        assert h.recorder.times[3] == pytest.approx(t + 0.3, abs=RETRY_TOLERANCE)
        assert h.recorder.times[4] == pytest.approx(t + 0.55, abs=RETRY_TOLERANCE)
        assert script.count("synchronize") == 2
        assert len(provider_errors(h.tracer)) == 3
        h.sm.close()


# -- 11. confirmations are used ----------------------------------------------------------------


async def test_confirmation_finalizes_without_a_vote_quorum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 11: confirmations were stored and never used. In voting with only its own vote (no
    quorum of 3), a confirmation for the target rank from a listed prover finalizes the round at
    once: voting -> verifying on confirmation_received, and the confirmed frame becomes the
    active state, though is_quorum never said yes."""
    h = build(minimum_provers=1, quorum_size=3)
    frame = MockState(1, "confirmed-1", "proposal-leader2")
    async with started(h):
        await h.recorder.wait_for_transition(VOTE_LOOP)
        await trio.sleep(0.5)
        assert h.sm.get_state() is State.VOTING
        received_at = trio.current_time()
        before = len(h.recorder.transitions)
        assert h.sm.receive_confirmation(LEADER2, frame) is Receipt.ACCEPTED
        await h.recorder.wait_for(State.VERIFYING)
        # The receipt is a self-loop; the commit watcher's event then leaves voting.
        assert h.recorder.transitions[before:] == [
            (S.VOTING, S.VOTING, E.CONFIRMATION_RECEIVED),
            (S.VOTING, S.VERIFYING, E.CONFIRMATION_RECEIVED),
        ]
        assert h.recorder.times[before:] == [received_at] * 2
        await h.recorder.wait_for_transition(BACK_TO_COLLECTING, before)
        assert trio.current_time() == received_at
        assert h.sm.get_active_state() == frame
        assert h.sm.round_view().target_rank == 2
        assert not h.recorder.reached(State.FINALIZING)
        assert h.script.count("finalize_votes") == 0
        assert h.voting.votes_sent == [OWN_VOTE]
        h.sm.close()


async def test_confirmation_for_a_later_rank_induces_sync(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 11: a confirmation for rank target+1 shows this peer missed a round: it induces a
    sync at once (liveness_check -> loading on induce_sync) and adopts what the sync returns."""
    h = build(minimum_provers=2)
    confirmed = MockState(2, "confirmed-2", "proposal-2")
    async with started(h):
        await h.recorder.wait_for(State.LIVENESS_CHECK)
        await trio.sleep(0.5)
        h.sync.state = confirmed  # what the network now has
        received_at = trio.current_time()
        before = len(h.recorder.transitions)
        assert h.sm.receive_confirmation(LEADER2, confirmed) is Receipt.ACCEPTED
        await h.recorder.wait_for_transition((S.LOADING, S.COLLECTING, E.SYNC_COMPLETE), before)
        assert h.recorder.transitions[before] == (S.LIVENESS_CHECK, S.LOADING, E.INDUCE_SYNC)
        assert h.recorder.times[before] == received_at
        assert h.sm.get_active_state() == confirmed
        assert h.sm.round_view().target_rank == 3
        assert h.script.count("synchronize") >= 2
        h.sm.close()


async def test_later_confirmation_after_a_stale_sync_induces_sync_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Defect 11: a confirmation for a later rank lets a peer that missed rounds sync at once.
    Here the first induced sync returns nothing newer (the peer it synced from lagged), so the
    machine resumes rank 1. When confirmations for ranks 3 and 2 arrive later, from another
    listed prover, while the network now serves rank 3, the machine must sync again and catch
    up, not stay in rank 1's liveness_check for ever."""
    h = build(minimum_provers=2)
    async with started(h, 120):
        await h.recorder.wait_for(State.LIVENESS_CHECK)
        await trio.sleep(0.5)
        assert h.sm.receive_confirmation(LEADER2, MockState(2, "c-2")) is Receipt.ACCEPTED
        first = await h.recorder.wait_for_transition((S.LIVENESS_CHECK, S.LOADING, E.INDUCE_SYNC))
        await h.recorder.wait_for_transition(TO_LIVENESS, first)
        assert h.sm.get_active_state() == GENESIS  # the sync had nothing newer
        assert h.sm.round_view().target_rank == 1

        await trio.sleep(0.5)
        latest = MockState(3, "c-3", "proposal-3")
        h.sync.state = latest  # the network has moved on to rank 3
        received_at = trio.current_time()
        before = len(h.recorder.transitions)
        assert h.sm.receive_confirmation(LEADER3, latest) is Receipt.ACCEPTED
        assert h.sm.receive_confirmation(LEADER3, MockState(2, "c-2")) is Receipt.ACCEPTED
        await trio.sleep(10.0)
        induced = times_of(h.recorder, (S.LIVENESS_CHECK, S.LOADING, E.INDUCE_SYNC))
        assert received_at in induced, (
            f"no sync induced after {h.recorder.transitions[before:][:3]}..."
        )
        assert h.sm.get_active_state() == latest
        assert h.sm.round_view().target_rank == 4
        h.sm.close()


# -- 10 (continued). an unexpected provider exception stops the machine ----------------------------


@pytest.mark.parametrize(
    ("method", "state", "error"),
    [
        pytest.param("get_next_leaders", S.LOADING, KeyError("leader"), id="get_next_leaders"),
        pytest.param("synchronize", S.LOADING, ValueError("bad frame"), id="synchronize"),
        pytest.param("collect", S.COLLECTING, TypeError("bad mutation"), id="collect"),
        pytest.param("send_liveness", S.COLLECTING, KeyError("topic"), id="send_liveness"),
        pytest.param("prove_next_state", S.PROVING, ZeroDivisionError("vdf"), id="prove"),
        pytest.param("send_proposal", S.PUBLISHING, RuntimeError("boom"), id="send_proposal"),
        pytest.param("decide_and_send_vote", S.VOTING, IndexError("no"), id="decide"),
        pytest.param("is_quorum", S.VOTING, LookupError("quorum"), id="is_quorum"),
        pytest.param("finalize_votes", S.FINALIZING, KeyError("vote"), id="finalize_votes"),
    ],
)
async def test_unexpected_provider_exception_stops_the_machine(
    autojump_clock: trio.testing.MockClock, method: str, state: State, error: Exception
) -> None:
    """Defect 12: a provider raising an unexpected exception (not ProviderError) stops
    the machine at that instant: it ends in stopped via stopping, the trace logger's error() got
    that very exception, listeners saw the move to stopped, and run() returned normally."""
    script = Script(crashes={method: error})
    h = build(minimum_provers=1, quorum_size=1, script=script)
    async with started(h):
        await h.recorder.wait_for(State.STOPPED)
    # run() returned by itself: the nursery closed without close().
    crashed_at = script.calls[method][0]
    assert trio.current_time() == crashed_at
    assert script.count(method) == 1
    assert h.sm.get_state() is State.STOPPED
    assert h.recorder.transitions[-2:] == [(state, S.STOPPING, E.STOP), CLEANED_UP]
    assert h.recorder.times[-2:] == [crashed_at, crashed_at]
    assert len(h.tracer.errors) == 1
    assert h.tracer.errors[0][1] is error
    assert h.sm.get_active_state() == GENESIS


def test_the_readme_shows_a_test_for_each_of_the_twelve_defects() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| [^|]+ \| (.*`test_.*) \|$", readme, re.MULTILINE)
    assert [int(number) for number, _ in rows] == list(range(1, 13))
    known = set(globals()) | set(vars(test_original_suite))
    for _, shown in rows:
        names = re.findall(r"`(test_\w+)`", shown)
        assert names
        assert all(name in known for name in names), names
