"""The tests' sample status: a record, from which every status JSON fixture is made."""

from __future__ import annotations

import json
from typing import Any

from p2pnode.peer.phases import Phase, RoundPhases
from p2pnode.peer.status import (
    CurrentRound,
    PeerStatus,
    RoundSummary,
    TransitionRow,
    Verdicts,
)

PROVERS = (
    "12D3KooWCL5JwJMkRXNPhg4NSYGPS9SJoabAMgedmWKXHs3Dn4v7",
    "12D3KooWJsTQoZuDA3mWGHkxo867cMEf3QTAkodxp39bG9KTNA2R",
    "12D3KooWMwiaqfApjpomCs6RHiHhkqYtW3i8FsKMfJ7HCBc8Vf5G",
    "12D3KooWQRxQFkihzr6tGHZFyrV9P9Xnc52kB25ni8u51mDTKgCk",
)
ME = PROVERS[1]
OTHERS = (PROVERS[0], PROVERS[2], PROVERS[3])
FRAMES = {
    6: "eae81a7c61e44b5f046e360a3a03735d46891d34382b08e9dac5928ad41c711c",
    5: "ecac3f9b6563983c3f79e5cca7214a91975ebc473652bffcf76de397f2fc4cf5",
    4: "95607d0844512293064eb27a3a23c0526ff5f92f35c54642e4ef5e2cb6f4103a",
}
TOPICS = ("liveness", "proposals", "votes", "confirmations", "mutations", "peers")


def _round(rank: int, prover: str, signers: int, ms: int, phases: tuple[int, ...]) -> RoundSummary:
    return RoundSummary(
        rank=rank,
        frame_id=FRAMES[rank],
        prover=prover,
        mutations=0,
        signers=signers,
        attempt=0,
        duration_ms=ms,
        phases=RoundPhases(rank, dict(zip(Phase, phases, strict=True))),
    )


SAMPLE = PeerStatus(
    peer_id=ME,
    addrs=(f"/ip4/127.0.0.1/tcp/4001/p2p/{ME}",),
    network="testnet",
    role="prover",
    state="voting",
    state_time=0.037,
    finalized_rank=6,
    finalized_id=FRAMES[6],
    recent=tuple((rank, FRAMES[rank]) for rank in (6, 5, 4)),
    peers=OTHERS,
    mesh=tuple((topic, 3) for topic in TOPICS),
    counters=(
        Verdicts("confirmations", 23, 2, 0),
        Verdicts("liveness", 28, 0, 0),
        Verdicts("mutations", 0, 3, 0),
        Verdicts("peers", 25, 0, 0),
        Verdicts("proposals", 19, 7, 0),
        Verdicts("votes", 24, 0, 0),
    ),
    rejected=(),
    best_peer_rank=6,
    sync="synced",
    sync_rejected=0,
    since_finalized=0.28856707100021595,
    mempool=0,
    transitions=122,
    hop_latency_ms=138.0,
    hop_latency_p99_ms=141.0,
    provers=PROVERS,
    recent_rounds=(
        _round(6, PROVERS[2], 4, 427, (59, 42, 179, 51, 12, 84)),
        _round(5, PROVERS[2], 3, 426, (59, 42, 178, 51, 12, 84)),
        _round(4, ME, 3, 438, (61, 43, 183, 52, 13, 86)),
    ),
    transition_log=(
        TransitionRow(1795825819.7595906, "liveness_check", "proving", "prover_signal"),
        TransitionRow(1795825819.8765638, "proving", "publishing", "proof_complete"),
        TransitionRow(1795825819.9637017, "publishing", "voting", "publish_complete"),
    ),
    errors=(),
    round=CurrentRound(
        rank=7,
        attempt=0,
        minimum_provers=3,
        quorum=3,
        provers=(ME, PROVERS[0], PROVERS[2], PROVERS[3]),
        live=PROVERS,
        proposals=(
            (PROVERS[2], "7ace2b6b1a7e7c7f977edbdb8eff7e587dc1ef80b457d04d1d9e8c57b48ff523"),
            (ME, "9f7609a01e4d83f96725c8222c55387245209f47113d7e9ac46b9f3589a296b1"),
        ),
        votes=(),
        votes_for=(),
        confirmations=(),
        voted=False,
        locked_on=None,
        lock_attempt=None,
        equivocators=(),
    ),
)


def sample_json() -> dict[str, Any]:
    """`SAMPLE` as a peer serves it: a fresh copy of plain JSON values, safe to change."""
    data: dict[str, Any] = json.loads(json.dumps(SAMPLE.to_json()))
    return data
