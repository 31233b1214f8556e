"""The original's Go test suite (ten scenarios), rewritten as deterministic pytest-trio tests.

Every test runs on the `autojump_clock` (a `MockClock(autojump_threshold=0)`): time is virtual, it
only moves when every task is blocked, so durations are asserted exactly and nothing really
sleeps. Mocks are shaped like the original's providers (its semantics, no attempts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import trio
import trio.testing

from p2pnode.consensus import Event, Receipt, State, StateMachine
from tests.mocks import (
    BACK_TO_COLLECTING,
    BOOT,
    CLEANED_UP,
    GENESIS,
    LEADER2,
    LEADER2_PROPOSAL,
    LEADER3,
    LEADERS,
    LIVENESS_TIMEOUT,
    OUTSIDER,
    OWN_PROPOSAL,
    OWN_VOTE,
    SELF,
    TO_LIVENESS,
    TO_PROVING,
    TO_PUBLISHING,
    TO_VOTING,
    VOTE_LOOP,
    E,
    Machine,
    MockCollected,
    MockLeader,
    MockLiveness,
    MockState,
    MockSync,
    MockVote,
    MockVoting,
    Recorder,
    S,
    TraceRecorder,
)

EPSILON = 1e-9
"""Virtual seconds that may pass while the machine reacts "at once"."""


@dataclass
class Harness:
    """A machine for peer leader1 with its mock providers, tracer and recording listener."""

    sm: Machine
    sync: MockSync
    voting: MockVoting
    leader: MockLeader
    liveness: MockLiveness
    tracer: TraceRecorder
    recorder: Recorder


def build(
    minimum_provers: int = 1,
    quorum_size: int = 1,
    *,
    sync: MockSync | None = None,
    voting: MockVoting | None = None,
    leader: MockLeader | None = None,
    liveness: MockLiveness | None = None,
) -> Harness:
    """The constructor call used by every scenario, with a `Recorder` attached."""
    sync = sync if sync is not None else MockSync()
    voting = voting if voting is not None else MockVoting("leader1", quorum_size=quorum_size)
    leader = leader if leader is not None else MockLeader(list(LEADERS))
    liveness = liveness if liveness is not None else MockLiveness()
    tracer = TraceRecorder()
    sm: Machine = StateMachine(
        SELF, GENESIS, True, minimum_provers, sync, voting, leader, liveness, tracer
    )
    recorder = Recorder()
    sm.add_listener(recorder)
    return Harness(sm, sync, voting, leader, liveness, tracer, recorder)


# -- 1. basic transitions ----------------------------------------------------------------------


async def test_basic_transitions(autojump_clock: trio.testing.MockClock) -> None:
    """A new machine is stopped with no transitions; start() goes starting -> loading ->
    collecting on start, init_complete, sync_complete, and starting lasts exactly its 1 s."""
    h = build()
    assert h.sm.get_state() is State.STOPPED
    assert h.sm.get_transition_count() == 0
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            assert h.sm.get_state() is State.STOPPED  # running is not starting
            assert h.sm.get_transition_count() == 0
            started_at = trio.current_time()
            h.sm.start()
            await h.recorder.wait_for(State.COLLECTING)
            assert h.recorder.transitions == BOOT
            assert h.sm.get_transition_count() == 3
            assert h.recorder.times[0] == started_at
            assert h.recorder.times[1] - h.recorder.times[0] == 1.0  # the starting timeout
            h.sm.close()
    assert h.sm.get_state() is State.STOPPED
    assert h.recorder.transitions[-1] == (S.COLLECTING, S.STOPPED, E.STOP)


# -- 2. leader flow ----------------------------------------------------------------------------


async def test_leader_flow(autojump_clock: trio.testing.MockClock) -> None:
    """A listed prover with minimum_provers=1 and self-delivery on counts its own liveness and
    goes collecting -> liveness_check -> proving (prover_signal), then publishes and votes."""
    h = build(minimum_provers=1, quorum_size=3)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.PROVING)
            assert h.recorder.transitions == [*BOOT, TO_LIVENESS, TO_PROVING]
            assert h.sm.round_view().live == ("leader1",)  # its own, recorded as received
            assert h.liveness.sent == 1
            await h.recorder.wait_for_transition(VOTE_LOOP)
            assert h.recorder.transitions == [
                *BOOT,
                TO_LIVENESS,
                TO_PROVING,
                TO_PUBLISHING,
                TO_VOTING,
                VOTE_LOOP,
            ]
            assert h.leader.proved == [OWN_PROPOSAL]
            assert h.voting.proposals_sent == [OWN_PROPOSAL]
            assert h.voting.votes_sent == [OWN_VOTE]
            h.sm.close()


# -- 3. external events ------------------------------------------------------------------------


async def test_external_events_lead_to_voting(autojump_clock: trio.testing.MockClock) -> None:
    """With minimum_provers=2 the machine waits in liveness_check (re-announcing only on its
    timer) until a second listed prover's liveness arrives; with a received proposal it then
    proves, publishes and votes."""
    h = build(minimum_provers=2, quorum_size=3)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.LIVENESS_CHECK)
            await trio.sleep(5.5)  # five liveness timeouts, and still only one live prover
            assert not h.recorder.reached(State.PROVING)
            assert h.sm.get_state() is State.LIVENESS_CHECK
            assert h.recorder.transitions == [*BOOT, TO_LIVENESS, *[LIVENESS_TIMEOUT] * 5]
            assert h.liveness.sent == 6  # the announcement in collecting + one per timeout

            # A proposal is stored but is no liveness: still no proving.
            assert h.sm.receive_proposal(LEADER2, LEADER2_PROPOSAL) is Receipt.ACCEPTED
            await trio.sleep(0.25)
            assert not h.recorder.reached(State.PROVING)
            assert h.sm.get_state() is State.LIVENESS_CHECK

            assert h.sm.receive_liveness_check(LEADER2, MockCollected(1)) is Receipt.ACCEPTED
            await h.recorder.wait_for(State.VOTING)
            await h.recorder.wait_for_transition(VOTE_LOOP)
            await trio.sleep(0.5)  # settle, well before the 1 s voting timeout
            assert h.recorder.transitions == [
                *BOOT,
                TO_LIVENESS,
                *[LIVENESS_TIMEOUT] * 5,
                (S.LIVENESS_CHECK, S.LIVENESS_CHECK, E.LIVENESS_CHECK_RECEIVED),
                TO_PROVING,
                TO_PUBLISHING,
                TO_VOTING,
                VOTE_LOOP,
            ]
            assert h.sm.get_state() is State.VOTING
            assert h.liveness.sent == 6  # a received announcement is never answered
            assert h.sm.round_view().proposals == {"leader1": "proved-1", "leader2": "leader2-1"}
            assert h.voting.votes_sent == [OWN_VOTE]  # min(proposer) of the two proposals
            h.sm.close()


# -- 4. voting ---------------------------------------------------------------------------------


async def test_voting_reaches_quorum_and_finalizes(autojump_clock: trio.testing.MockClock) -> None:
    """Voting waits for minimum_provers proposals; a received proposal makes it vote and a
    received vote makes the quorum: finalizing -> verifying -> collecting, the voted frame
    becomes the active state, and exactly one vote and one confirmation were sent for rank 1."""
    h = build(minimum_provers=2, quorum_size=2)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.LIVENESS_CHECK)
            assert h.sm.receive_liveness_check(LEADER2, MockCollected(1)) is Receipt.ACCEPTED
            await h.recorder.wait_for(State.VOTING)
            entered_voting = len(h.recorder.transitions) - 1
            assert h.voting.votes_sent == []  # one proposal (its own) is fewer than two

            assert h.sm.receive_proposal(LEADER2, LEADER2_PROPOSAL) is Receipt.ACCEPTED
            await h.recorder.wait_for_transition(VOTE_LOOP)
            assert h.voting.votes_sent == [OWN_VOTE]
            assert h.sm.get_state() is State.VOTING  # its own vote alone is no quorum of 2

            vote = MockVote(1, "leader2", "proposal-1")
            assert h.sm.receive_vote(SELF, LEADER2, vote) is Receipt.ACCEPTED
            await h.recorder.wait_for_transition(BACK_TO_COLLECTING)
            assert h.recorder.transitions[entered_voting:] == [
                TO_VOTING,
                (S.VOTING, S.VOTING, E.PROPOSAL_RECEIVED),
                VOTE_LOOP,
                VOTE_LOOP,
                (S.VOTING, S.FINALIZING, E.QUORUM_REACHED),
                (S.FINALIZING, S.VERIFYING, E.AGGREGATION_DONE),
                BACK_TO_COLLECTING,
            ]
            assert h.sm.get_active_state() == OWN_PROPOSAL
            view = h.sm.round_view()
            assert (view.finalized_rank, view.finalized_id, view.target_rank) == (1, "proved-1", 2)

            await trio.sleep(3)  # rank 2 waits for a second live prover: nothing more is sent
            assert h.voting.votes_sent == [OWN_VOTE]
            assert h.voting.confirmations_sent == [OWN_PROPOSAL]
            h.sm.close()


# -- 5. stop -----------------------------------------------------------------------------------


async def test_stop_from_loading(autojump_clock: trio.testing.MockClock) -> None:
    """stop() during a long synchronize goes loading -> stopping -> stopped with no virtual time
    passing, cancels the sync, and run() returns on its own (no close())."""
    h = build(sync=MockSync(delay=100.0))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.LOADING)
            asked_at = trio.current_time()
            h.sm.stop()
            await h.recorder.wait_for(State.STOPPED)
            assert trio.current_time() - asked_at < EPSILON
            assert h.sm.get_state() is State.STOPPED
        # The nursery could only exit because run() returned.
        assert trio.current_time() - asked_at < EPSILON
    assert h.recorder.transitions == [
        *BOOT[:2],
        (S.LOADING, S.STOPPING, E.STOP),
        CLEANED_UP,
    ]
    assert h.sync.calls == 1
    assert h.sm.get_active_state() == GENESIS


async def test_stop_while_proving(autojump_clock: trio.testing.MockClock) -> None:
    """stop() while prove_next_state is in flight (1000 s) cancels it and reaches stopped at once;
    run() returns on its own."""
    h = build(leader=MockLeader(list(LEADERS), prove_delay=1000.0))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.PROVING)
            await trio.sleep(2)  # the proof is in flight
            asked_at = trio.current_time()
            h.sm.stop()
            await h.recorder.wait_for(State.STOPPED)
            assert trio.current_time() - asked_at < EPSILON
        assert trio.current_time() - asked_at < EPSILON
    assert h.recorder.transitions == [
        *BOOT,
        TO_LIVENESS,
        TO_PROVING,
        (S.PROVING, S.STOPPING, E.STOP),
        CLEANED_UP,
    ]
    assert h.leader.proved == []  # cancelled, never completed
    assert h.voting.proposals_sent == []


# -- 6. liveness -------------------------------------------------------------------------------


async def test_liveness_recorded_and_unlisted_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Received liveness is kept once per listed prover (`round_view().live`); once the prover
    list is known an unlisted peer gets NOT_A_PROVER, a stale rank STALE, a repeat DUPLICATE;
    the threshold of 3 is met only by the third listed prover."""
    h = build(minimum_provers=3)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.LIVENESS_CHECK)
            view = h.sm.round_view()
            assert view.provers == tuple(LEADERS)
            assert view.live == ("leader1",)

            assert h.sm.receive_liveness_check(OUTSIDER, MockCollected(1)) is Receipt.NOT_A_PROVER
            assert h.sm.receive_liveness_check(LEADER3, MockCollected(1)) is Receipt.ACCEPTED
            assert h.sm.receive_liveness_check(LEADER3, MockCollected(1)) is Receipt.DUPLICATE
            assert h.sm.receive_liveness_check(LEADER2, MockCollected(0)) is Receipt.STALE
            await trio.sleep(0.5)
            assert h.sm.round_view().live == ("leader1", "leader3")
            assert h.sm.get_state() is State.LIVENESS_CHECK
            assert h.liveness.sent == 1  # receiving does not make it announce again

            await trio.sleep(1.0)  # one liveness timeout: announce again
            assert h.liveness.sent == 2
            assert h.sm.get_state() is State.LIVENESS_CHECK

            assert h.sm.receive_liveness_check(LEADER2, MockCollected(1)) is Receipt.ACCEPTED
            await h.recorder.wait_for(State.PROVING)
            assert h.sm.round_view().live == ("leader1", "leader2", "leader3")
            h.sm.close()


async def test_unlisted_liveness_before_prover_list_never_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before the prover list is known an unlisted peer's liveness is stored (ACCEPTED), but it
    never counts toward minimum_provers: only a second listed prover lets the machine prove."""
    h = build(minimum_provers=2)
    assert h.sm.receive_liveness_check(OUTSIDER, MockCollected(1)) is Receipt.ACCEPTED
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.LIVENESS_CHECK)
            await trio.sleep(3.5)
            assert not h.recorder.reached(State.PROVING)
            assert h.sm.get_state() is State.LIVENESS_CHECK
            assert h.sm.receive_liveness_check(LEADER2, MockCollected(1)) is Receipt.ACCEPTED
            await h.recorder.wait_for(State.PROVING)
            h.sm.close()


# -- 7. metrics --------------------------------------------------------------------------------


async def test_metrics_are_exact(autojump_clock: trio.testing.MockClock) -> None:
    """get_transition_count() counts every transition (self-loops included) and get_state_time()
    gives exact virtual seconds since the state was entered."""
    # Dyadic delays keep every virtual time exactly representable.
    h = build(
        minimum_provers=2,
        sync=MockSync(delay=10.0),
        liveness=MockLiveness(collect_delay=0.25),
    )
    assert h.sm.get_transition_count() == 0
    assert h.sm.get_state_time() == 0.0
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.STARTING)
            assert h.sm.get_state_time() == 0.0
            await trio.sleep(0.25)
            assert h.sm.get_state() is State.STARTING
            assert h.sm.get_state_time() == 0.25
            assert h.sm.get_transition_count() == 1

            await h.recorder.wait_for(State.LOADING)
            assert h.sm.get_state_time() == 0.0
            await trio.sleep(2.5)
            assert h.sm.get_state_time() == 2.5
            assert h.sm.get_transition_count() == 2

            await h.recorder.wait_for(State.LIVENESS_CHECK)
            assert h.sm.get_transition_count() == 4
            assert h.recorder.times[3] - h.recorder.times[2] == 0.25  # collecting lasted
            await trio.sleep(2.5)  # two liveness_timeout self-loops
            assert h.sm.get_transition_count() == 6
            assert h.recorder.transitions[4:] == [LIVENESS_TIMEOUT, LIVENESS_TIMEOUT]
            # A self-loop does not leave the state: its time counts from entry.
            assert h.sm.get_state_time() == 2.5
            assert h.sm.get_transition_count() == len(h.recorder.transitions)
            h.sm.close()
    assert h.sm.get_transition_count() == 7  # close() is the move to stopped


# -- 8. confirmations --------------------------------------------------------------------------


async def test_confirmation_finalizes_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """A confirmation for the target rank from a listed prover is the final frame (seed
    semantics): the machine goes to verifying on confirmation_received with no virtual time
    passing and adopts that frame; stale-rank confirmations get STALE."""
    h = build(minimum_provers=2)
    frame = MockState(1, "confirmed-1", "proposal-leader2")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.LIVENESS_CHECK)
            assert h.sm.receive_confirmation(LEADER2, GENESIS) is Receipt.STALE
            outsider_frame = MockState(1, "outsider-1")
            assert h.sm.receive_confirmation(OUTSIDER, outsider_frame) is Receipt.NOT_A_PROVER

            received_at = trio.current_time()
            before = len(h.recorder.transitions)
            assert h.sm.receive_confirmation(LEADER2, frame) is Receipt.ACCEPTED
            await h.recorder.wait_for(State.VERIFYING)
            assert trio.current_time() - received_at < EPSILON
            # The receipt is handled first (a self-loop), then the commit found in it moves on.
            assert h.recorder.transitions[before:] == [
                (S.LIVENESS_CHECK, S.LIVENESS_CHECK, E.CONFIRMATION_RECEIVED),
                (S.LIVENESS_CHECK, S.VERIFYING, E.CONFIRMATION_RECEIVED),
            ]
            await h.recorder.wait_for_transition(BACK_TO_COLLECTING)
            assert trio.current_time() - received_at < EPSILON
            assert h.sm.get_active_state() == frame
            assert h.voting.votes_sent == []  # finalized without voting
            assert h.sm.round_view().target_rank == 2

            assert h.sm.receive_confirmation(LEADER2, frame) is Receipt.STALE
            assert h.sm.receive_confirmation(LEADER3, frame) is Receipt.STALE
            h.sm.close()


# -- 9. concurrency ----------------------------------------------------------------------------


@dataclass
class StateProbe:
    """A listener that reads the machine from inside on_transition."""

    sm: Machine
    seen: list[tuple[State, State, int]] = field(default_factory=list)

    def on_transition(self, from_: State, to: State, event: Event) -> None:
        self.seen.append((to, self.sm.get_state(), self.sm.get_transition_count()))


async def test_concurrent_callers(autojump_clock: trio.testing.MockClock) -> None:
    """Many tasks at once send sync_complete, liveness and proposals and read state and count:
    nothing raises or deadlocks, each message is accepted once, the machine reaches voting and
    votes once, and a listener calling get_state() inside on_transition sees the new state."""
    h = build(minimum_provers=2, quorum_size=3, sync=MockSync(delay=0.5))
    probe = StateProbe(h.sm)
    h.sm.add_listener(probe)
    receipts: dict[str, list[Receipt]] = {"leader2": [], "leader3": [], "proposal": []}
    counts: list[list[int]] = []

    async def hammer(number: int) -> None:
        seen_counts: list[int] = []
        counts.append(seen_counts)
        peer = LEADER2 if number % 2 else LEADER3
        for round_ in range(20):
            h.sm.send_event(Event.SYNC_COMPLETE)
            receipts[peer.name].append(h.sm.receive_liveness_check(peer, MockCollected(1)))
            receipts["proposal"].append(h.sm.receive_proposal(LEADER2, LEADER2_PROPOSAL))
            assert isinstance(h.sm.get_state(), State)
            seen_counts.append(h.sm.get_transition_count())
            await trio.sleep(0.0625 * ((number + round_) % 4))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            async with trio.open_nursery() as workers:
                for number in range(32):
                    workers.start_soon(hammer, number)
                await h.recorder.wait_for(State.VOTING)
                await h.recorder.wait_for_transition(VOTE_LOOP)
            assert h.sm.get_state() is State.VOTING
            assert h.voting.votes_sent == [OWN_VOTE]
            h.sm.close()

    assert len(counts) == 32
    for seen_counts in counts:
        assert seen_counts == sorted(seen_counts)  # the count never goes back
    for kind, got in receipts.items():
        assert len(got) == (320 if kind != "proposal" else 640)
        assert got.count(Receipt.ACCEPTED) == 1, kind
        assert set(got) == {Receipt.ACCEPTED, Receipt.DUPLICATE}, kind
    assert probe.seen == [(to, to, n) for n, (_, to, _) in enumerate(h.recorder.transitions, 1)]
    assert h.tracer.errors == []


# -- 10. panic recovery ------------------------------------------------------------------------


@dataclass
class PanickyVoting(MockVoting):
    """A voting provider whose send_confirmation crashes (not a `ProviderError`)."""

    async def send_confirmation(self, finalized: MockState) -> None:
        raise RuntimeError("send_confirmation exploded")


async def test_provider_crash_stops_machine(autojump_clock: trio.testing.MockClock) -> None:
    """A RuntimeError from send_confirmation stops the machine: it ends in stopped, the error
    reaches the trace logger's error(), a listener sees the move to stopped, and run() returns
    normally (the nursery exits with no exception and no close())."""
    h = build(voting=PanickyVoting("leader1", quorum_size=1))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.sm.run)
            h.sm.start()
            await h.recorder.wait_for(State.STOPPED)
    assert h.sm.get_state() is State.STOPPED
    assert h.recorder.transitions[-3:] == [
        (S.FINALIZING, S.VERIFYING, E.AGGREGATION_DONE),
        (S.VERIFYING, S.STOPPING, E.STOP),
        CLEANED_UP,
    ]
    crashes = [err for _, err in h.tracer.errors if isinstance(err, RuntimeError)]
    assert len(crashes) == 1
    assert str(crashes[0]) == "send_confirmation exploded"
    assert h.sm.get_active_state() == GENESIS  # the frame was never adopted
