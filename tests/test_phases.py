"""Per-round phase timings: the engine's states folded into liveness, proving, voting..."""

from __future__ import annotations

from p2pnode.consensus import Event, State
from p2pnode.peer.phases import Phase, PhaseClock


class Ticks:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ROUND = [
    (State.COLLECTING, State.LIVENESS_CHECK, Event.COLLECTION_DONE, 0.010),
    (State.LIVENESS_CHECK, State.PROVING, Event.PROVER_SIGNAL, 0.020),
    (State.PROVING, State.PUBLISHING, Event.PROOF_COMPLETE, 0.040),
    (State.PUBLISHING, State.VOTING, Event.PUBLISH_COMPLETE, 0.001),
    (State.VOTING, State.VOTING, Event.VOTE_RECEIVED, 0.030),  # a self-loop changes nothing
    (State.VOTING, State.FINALIZING, Event.QUORUM_REACHED, 0.020),
    (State.FINALIZING, State.VERIFYING, Event.CONFIRMATION_RECEIVED, 0.025),
]


def run_round(clock: PhaseClock, ticks: Ticks, rank: int) -> None:
    for source, target, event, spent in ROUND:
        ticks.now += spent
        clock.on_transition(source, target, event)
    ticks.now += 0.003  # keeping the frame
    clock.on_final(rank)
    clock.on_transition(State.VERIFYING, State.COLLECTING, Event.VERIFICATION_DONE)


def test_a_round_is_split_into_its_phases() -> None:
    ticks = Ticks()
    clock = PhaseClock(clock=ticks)
    clock.on_transition(State.STARTING, State.COLLECTING, Event.SYNC_COMPLETE)
    ticks.now += 0.5  # before the first round: starting, not part of it
    clock.on_final(0)
    run_round(clock, ticks, 1)
    phases = clock.of(1)
    assert phases is not None
    assert phases.millis == {
        Phase.LIVENESS: 30,
        Phase.PROVING: 41,
        Phase.VOTING: 50,
        Phase.CONFIRMATION: 25,
        Phase.COMMIT: 3,
        Phase.OTHER: 0,
    }
    assert phases.to_json()["voting"] == 50


def test_catching_up_counts_as_other_and_old_rounds_are_forgotten() -> None:
    ticks = Ticks()
    clock = PhaseClock(keep=2, clock=ticks)
    clock.on_transition(State.COLLECTING, State.LOADING, Event.INDUCE_SYNC)
    ticks.now += 0.2
    clock.on_final(5)
    synced = clock.of(5)
    assert synced is not None
    assert synced.millis[Phase.OTHER] == 200
    assert sum(synced.millis.values()) == 200
    clock.on_final(6)
    clock.on_final(7)
    assert clock.of(5) is None
    assert clock.of(7) is not None
