"""The status record and its JSON: what a peer writes, every reader reads back unchanged."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.peer.phases import Phase, RoundPhases
from p2pnode.peer.status import (
    CurrentRound,
    ErrorRow,
    PeerStatus,
    RoundSummary,
    TransitionRow,
    Verdicts,
)
from p2pnode.peer.status_read import parse_status
from tests.status_sample import SAMPLE

URL = "http://127.0.0.1:1"
texts = st.text(max_size=6)
counts = st.integers(0, 2**53)
numbers = st.floats(allow_nan=False, allow_infinity=False)
maybe = st.none() | numbers
names = st.lists(texts, max_size=4).map(tuple)


def keyed(values: st.SearchStrategy[object]) -> st.SearchStrategy[tuple[tuple[str, object], ...]]:
    """Pairs with distinct keys, as a JSON object keeps them."""
    return st.dictionaries(texts, values, max_size=4).map(lambda d: tuple(d.items()))


@st.composite
def summaries(draw: st.DrawFn) -> tuple[RoundSummary, ...]:
    ranks = draw(st.lists(st.integers(0, 2**40), unique=True, max_size=4))
    rows = [
        RoundSummary(
            rank=rank,
            frame_id=draw(texts),
            prover=draw(texts),
            mutations=draw(counts),
            signers=draw(counts),
            attempt=draw(counts),
            duration_ms=draw(counts),
            phases=draw(st.none() | st.builds(RoundPhases, st.just(rank), _millis())),
        )
        for rank in ranks
    ]
    return tuple(sorted(rows, key=lambda row: row.rank, reverse=True))


def _millis() -> st.SearchStrategy[dict[Phase, int]]:
    return st.fixed_dictionaries(dict.fromkeys(Phase, counts))


rounds = st.builds(
    CurrentRound,
    rank=counts,
    attempt=counts,
    minimum_provers=counts,
    quorum=st.integers(1, 100),
    provers=names,
    live=names,
    proposals=keyed(texts),
    votes=keyed(texts),
    votes_for=st.none() | keyed(texts),
    confirmations=st.dictionaries(counts, names, max_size=3).map(
        lambda d: tuple(sorted(d.items()))
    ),
    voted=st.booleans(),
    locked_on=st.none() | texts,
    lock_attempt=st.none() | counts,
    equivocators=names,
)

statuses = st.builds(
    PeerStatus,
    peer_id=texts,
    network=texts,
    role=texts,
    state=texts,
    state_time=numbers,
    finalized_rank=counts,
    finalized_id=texts,
    best_peer_rank=counts,
    sync=st.sampled_from(["synced", "catching up", "stalled"]),
    since_finalized=maybe,
    peers=names,
    mesh=keyed(counts),
    counters=st.dictionaries(texts, st.tuples(counts, counts, counts), max_size=3).map(
        lambda d: tuple(Verdicts(topic, *d[topic]) for topic in sorted(d))
    ),
    rejected=keyed(counts),
    mempool=counts,
    transitions=counts,
    hop_latency_ms=maybe,
    provers=names,
    recent_rounds=summaries(),
    transition_log=st.lists(st.builds(TransitionRow, maybe, texts, texts, texts)).map(tuple),
    errors=st.lists(st.builds(ErrorRow, maybe, texts), max_size=3).map(tuple),
    round=rounds,
    addrs=names,
    hop_latency_p99_ms=maybe,
    recent=st.lists(st.tuples(counts, texts), max_size=3).map(tuple),
    sync_rejected=counts,
    malformed=keyed(counts),
    banned=names,
    limited=keyed(counts),
    work=keyed(counts),
    # A peer knows of no rank below its own: the best rank it reports is never lower.
).map(lambda s: replace(s, best_peer_rank=s.finalized_rank + s.best_peer_rank % 3))


def served(status: PeerStatus) -> object:
    """What a reader gets: the record's JSON through an encoder and a decoder."""
    return json.loads(json.dumps(status.to_json()))


@given(statuses)
def test_every_status_reads_back_as_the_record_it_was_served_from(status: PeerStatus) -> None:
    read = parse_status(served(status), URL)
    assert read == replace(status, url=URL)
    assert read.problems == ()


def test_the_sample_reads_back_whole() -> None:
    assert parse_status(served(SAMPLE), URL) == replace(SAMPLE, url=URL)


def test_a_reader_names_each_field_it_could_not_use() -> None:
    data = served(SAMPLE)
    assert isinstance(data, dict)
    data["finalized_rank"] = "six"
    del data["banned"]
    data["round"]["voted"] = None
    read = parse_status(data, URL)
    assert read.problems == ("finalized_rank", "round.voted", "banned")
    assert (read.finalized_rank, read.banned, read.round.voted) == (0, (), False)
    assert read.peer_id == SAMPLE.peer_id


def test_a_status_from_an_older_peer_still_reads() -> None:
    """Before `addrs`, `votes_for` and `round.quorum` existed: the quorum is n - f."""
    data = served(SAMPLE)
    assert isinstance(data, dict)
    del data["addrs"], data["round"]["votes_for"], data["round"]["quorum"]
    read = parse_status(data, URL)
    assert read.problems == ()
    assert (read.addrs, read.round.votes_for, read.round.quorum) == ((), None, 3)
