"""The chain's pieces alone: genesis, certificates, frame validation and the mempool."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.chain import certs, vdf
from p2pnode.chain.certs import CertificateChecker, statement_of
from p2pnode.chain.crypto import Keypair, frame_statement, sign
from p2pnode.chain.genesis import Genesis, GenesisError, LeaderOrder, frame_challenge, leader_order
from p2pnode.chain.mempool import (
    MAX_FRAME_MUTATION_BYTES,
    MAX_MUTATION_SIZE,
    MAX_MUTATIONS_PER_FRAME,
    MUTATION_OVERHEAD,
    Admission,
    Mempool,
    mutation_bytes,
)
from p2pnode.chain.types import (
    HASH_SIZE,
    Certificate,
    CertKind,
    Frame,
    ProverId,
    mutations_root,
)
from p2pnode.chain.validation import (
    AHEAD_OF_CLOCK,
    MAX_CLOCK_AHEAD_MS,
    MUTATION_REPEATED,
    FrameChecker,
)

NETWORK = "chain-test"
DIFFICULTY = 100
T0 = 1_700_000_000_000
KEYS = tuple(Keypair.from_seed(bytes([i]) * 32) for i in range(1, 5))
OUTSIDER = Keypair.from_seed(bytes([66]) * 32)
GENESIS = Genesis.create(NETWORK, [k.prover for k in KEYS], DIFFICULTY, T0)
KEYPAIR_OF = {k.public: k for k in (*KEYS, OUTSIDER)}
MUTATIONS = (b"alpha", b"beta")


def signer(index: int) -> Keypair:
    """The key pair of the prover at `index` in the genesis order (ordered by key)."""
    return KEYPAIR_OF[GENESIS.provers[index].key]


def signed(frame: Frame, keypair: Keypair, network: str = NETWORK) -> Frame:
    return replace(frame, signature=sign(keypair, network, frame_statement(frame)))


@functools.cache
def proven(
    keypair: Keypair, mutations: tuple[bytes, ...] = MUTATIONS, difficulty: int = DIFFICULTY
) -> Frame:
    """A frame at rank 1 on the genesis frame, proven and signed by `keypair`."""
    parent = GENESIS.frame()
    root = mutations_root(mutations)
    challenge = frame_challenge(GENESIS, 1, parent.id, keypair.public, root)
    output, proof = vdf.prove(challenge, difficulty)
    unsigned = Frame(
        round=1,
        parent=parent.id,
        prover=keypair.public,
        timestamp=T0 + 1_000,
        root=root,
        mutations=mutations,
        difficulty=difficulty,
        output=output,
        proof=proof,
        signature=b"",
    )
    return signed(unsigned, keypair)


def synthetic(rank: int, tag: bytes = b"x") -> Frame:
    """A well-shaped frame for certificate checks (which look at its rank and id only)."""
    return Frame(
        round=rank,
        parent=tag * HASH_SIZE,
        prover=KEYS[0].public,
        timestamp=T0,
        root=mutations_root(()),
        mutations=(),
        difficulty=DIFFICULTY,
        output=b"o" * vdf.FORM_SIZE,
        proof=b"p" * vdf.FORM_SIZE,
        signature=b"s" * 64,
    )


def certificate(
    frame: Frame,
    kind: CertKind,
    attempt: int,
    signers: tuple[int, ...],
    *,
    signed_kind: CertKind | None = None,
    rank: int | None = None,
    frame_id: bytes | None = None,
    network: str = NETWORK,
) -> Certificate:
    """A certificate whose signers really signed (what the keywords say, else the frame's
    statement of `kind`)."""
    statement = statement_of(
        signed_kind or kind,
        frame.round if rank is None else rank,
        attempt,
        frame.id if frame_id is None else frame_id,
    )
    signatures = tuple(sign(signer(i), network, statement) for i in signers)
    return Certificate(kind, attempt, signers, signatures)


# --- genesis --------------------------------------------------------------------------------


def test_genesis_round_trips_through_its_canonical_bytes(tmp_path: Path) -> None:
    data = GENESIS.to_bytes()
    assert data.endswith(b"}\n")
    assert b" " not in data
    document = json.loads(data)
    assert list(document) == sorted(document)
    assert document == {
        "version": 1,
        "network": NETWORK,
        "provers": [p.identity() for p in GENESIS.provers],
        "difficulty": DIFFICULTY,
        "timestamp": T0,
    }
    again = Genesis.from_bytes(data)
    assert again == GENESIS
    assert again.to_bytes() == data
    path = tmp_path / "genesis.json"
    GENESIS.save(path)
    assert path.read_bytes() == data
    assert Genesis.load(path) == GENESIS


def test_a_genesis_may_choose_512_bit_proofs_and_says_so_only_then() -> None:
    small = Genesis.create(NETWORK, [k.prover for k in KEYS], DIFFICULTY, T0, vdf_bits=512)
    assert json.loads(small.to_bytes())["vdf_bits"] == 512
    assert Genesis.from_bytes(small.to_bytes()) == small
    assert small.hash() != GENESIS.hash()
    # 1,024 bits written out is the default: the same network as the file without the field.
    explicit = Genesis.from_bytes(_document(vdf_bits=1024))
    assert explicit == GENESIS
    assert explicit.hash() == GENESIS.hash()


def test_genesis_load_reports_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GenesisError, match="cannot read"):
        Genesis.load(tmp_path / "absent.json")


def test_create_orders_and_deduplicates_the_provers() -> None:
    provers = [k.prover for k in reversed(KEYS)] + [KEYS[2].prover]
    genesis = Genesis.create(NETWORK, provers, DIFFICULTY, T0)
    assert genesis == GENESIS
    assert [p.key for p in genesis.provers] == sorted(k.public for k in KEYS)
    assert genesis.index_of(genesis.provers[2].key) == 2
    assert genesis.index_of(OUTSIDER.public) is None
    assert all(genesis.is_prover(k.public) for k in KEYS)
    assert not genesis.is_prover(OUTSIDER.public)


@pytest.mark.parametrize(("count", "quorum"), [(1, 1), (2, 2), (3, 3), (4, 3), (7, 5), (10, 7)])
def test_quorum_is_n_minus_f(count: int, quorum: int) -> None:
    provers = [Keypair.from_seed(bytes([i]) * 32).prover for i in range(1, count + 1)]
    assert Genesis.create(NETWORK, provers, DIFFICULTY, T0).quorum == quorum


def test_genesis_hash_is_stable_and_names_every_field() -> None:
    assert GENESIS.hash() == hashlib.sha256(GENESIS.to_bytes()).digest()
    same = Genesis.create(NETWORK, [k.prover for k in reversed(KEYS)], DIFFICULTY, T0)
    assert same.hash() == GENESIS.hash()
    assert same.frame().id == GENESIS.frame().id
    variants = [
        Genesis.create("other-net", [k.prover for k in KEYS], DIFFICULTY, T0),
        Genesis.create(NETWORK, [k.prover for k in KEYS[:3]], DIFFICULTY, T0),
        Genesis.create(NETWORK, [k.prover for k in KEYS], DIFFICULTY + 1, T0),
        Genesis.create(NETWORK, [k.prover for k in KEYS], DIFFICULTY, T0 + 1),
    ]
    hashes = {GENESIS.hash(), *(v.hash() for v in variants)}
    assert len(hashes) == 5
    frame_ids = {GENESIS.frame().id, *(v.frame().id for v in variants)}
    assert len(frame_ids) == 5


def test_genesis_frame_is_rank_zero_bound_to_the_genesis() -> None:
    frame = GENESIS.frame()
    assert frame.round == 0
    assert frame.parent == bytes(HASH_SIZE)
    assert frame.timestamp == T0
    assert frame.mutations == ()
    assert frame.root == mutations_root(())
    assert frame.output == GENESIS.hash()
    assert frame.difficulty == DIFFICULTY
    assert frame == GENESIS.frame()


def test_leader_order_rotates_the_sorted_provers_by_rank_whatever_the_frames_hold() -> None:
    provers = sorted(GENESIS.provers, key=lambda p: p.key.hex())
    n = len(provers)
    for rank in range(1, 3 * n):
        priors = [replace(GENESIS.frame(), round=rank - 1, timestamp=T0 + i) for i in range(8)]
        # Whatever the prior frame's content (its timestamp here), the order is the same.
        orders = {tuple(leader_order(GENESIS, rank, {rank - 1: p}.get)) for p in priors}
        assert orders == {tuple(provers[rank % n :] + provers[: rank % n])}


def test_a_prover_that_lost_its_turn_is_last_in_the_order() -> None:
    provers = sorted(GENESIS.provers, key=lambda p: p.key.hex())
    n = len(provers)
    rank = 2 * n + 1  # provers[1] leads; provers[2] led at rank n + 2 and lost it
    others = replace(GENESIS.frame(), prover=provers[3].key)
    chain = {n + 2: others}
    order = leader_order(GENESIS, rank, chain.get)
    assert order[-1] == provers[2]
    assert order[:-1] == [p for p in provers[1:] + provers[:1] if p != provers[2]]


def test_the_leader_order_of_a_chain_reads_each_final_frame_once() -> None:
    provers = sorted(GENESIS.provers, key=lambda p: p.key.hex())
    n = len(provers)
    last = 40 * n  # far beyond the winners it keeps (twice the order's memory)
    won = {r: provers[(r * r) % n].key for r in range(1, last)}  # leaders won and lost
    chain = {r: replace(GENESIS.frame(), round=r, prover=key) for r, key in won.items()}
    read: list[int] = []

    def frame_at(rank: int) -> Frame | None:
        read.append(rank)
        return chain.get(rank)

    order = LeaderOrder(GENESIS, frame_at)
    for rank in range(1, last):
        assert order(rank) == leader_order(GENESIS, rank, chain.get)
    assert read == list(range(1, last - 1))


def _document(**changes: object) -> bytes:
    document: dict[str, object] = GENESIS.to_json()
    for name, value in changes.items():
        if value is _DROP:
            del document[name]
        else:
            document[name] = value
    return json.dumps(document).encode()


_DROP = object()
_IDS = [p.identity() for p in GENESIS.provers]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"\x80\x81", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"genesis"', "must be a JSON object"),
        (_document(timestamp=_DROP), "must have the fields"),
        (_document(network=_DROP), "must have the fields"),
        (_document(extra=1), "must have the fields"),
        (_document(version=2), "unsupported genesis version"),
        (_document(version="1"), "unsupported genesis version"),
        (_document(network="Bad_Name"), "network name"),
        (_document(network=""), "network name"),
        (_document(network="-leading-dash"), "network name"),
        (_document(network="a" * 64), "network name"),
        (_document(network=7), "network must be a string"),
        (_document(provers="12D3KooW"), "provers must be a list"),
        (_document(provers=[1, 2]), "provers must be a list"),
        (_document(provers=[]), "1 to 64 provers"),
        (_document(provers=list(reversed(_IDS))), "distinct and ordered by key"),
        (_document(provers=[_IDS[0], *_IDS]), "distinct and ordered by key"),
        (_document(provers=[*_IDS[:3], "not-a-peer-id"]), "not a peer id"),
        (_document(provers=["QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"]), "not an ed25519"),
        (_document(provers=["\u00e9"]), "not a peer id"),
        (_document(difficulty=0), "difficulty must be between"),
        (_document(difficulty=-5), "difficulty must be between"),
        (_document(difficulty=10_000_001), "difficulty must be between"),
        (_document(difficulty=1.5), "difficulty must be an integer"),
        (_document(difficulty="100"), "difficulty must be an integer"),
        (_document(difficulty=True), "difficulty must be an integer"),
        (_document(difficulty=None), "difficulty must be an integer"),
        (_document(timestamp=-1), "timestamp must not be negative"),
        (_document(timestamp="now"), "timestamp must be an integer"),
        (_document(vdf_bits=768), "vdf_bits must be one of 512, 1024"),
        (_document(vdf_bits=2048), "vdf_bits must be one of 512, 1024"),
        (_document(vdf_bits="512"), "vdf_bits must be an integer"),
        (_document(vdf_bits=True), "vdf_bits must be an integer"),
    ],
)
def test_malformed_genesis_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(GenesisError, match=reason):
        Genesis.from_bytes(data)


def test_too_many_provers_are_refused() -> None:
    provers = [Keypair.from_seed(i.to_bytes(32, "big")).prover for i in range(1, 66)]
    ids = sorted(provers, key=lambda p: p.key)
    with pytest.raises(GenesisError, match="1 to 64 provers"):
        Genesis.from_bytes(_document(provers=[p.identity() for p in ids]))
    assert len(Genesis.create(NETWORK, provers[:64], 1, 0).provers) == 64


def test_genesis_constructor_checks_its_fields() -> None:
    provers = tuple(GENESIS.provers)
    with pytest.raises(GenesisError, match="network name"):
        Genesis("UPPER", provers, DIFFICULTY, T0)
    with pytest.raises(GenesisError, match="distinct and ordered"):
        Genesis(NETWORK, tuple(reversed(provers)), DIFFICULTY, T0)
    with pytest.raises(GenesisError, match="difficulty"):
        Genesis(NETWORK, provers, 0, T0)
    with pytest.raises(GenesisError, match="negative"):
        Genesis(NETWORK, provers, DIFFICULTY, -1)
    assert Genesis(NETWORK, provers, 1, 0).difficulty == 1


# --- certificates ---------------------------------------------------------------------------

ranks = st.integers(min_value=0, max_value=2**63 - 1)
attempts = st.integers(min_value=0, max_value=2**20)
kinds = st.sampled_from(CertKind)
quorum_signers = st.lists(st.integers(0, 3), min_size=3, max_size=4, unique=True).map(
    lambda s: tuple(sorted(s))
)
minority_signers = st.lists(st.integers(0, 3), max_size=2, unique=True).map(
    lambda s: tuple(sorted(s))
)


@given(rank=ranks, attempt=attempts, kind=kinds, signers=quorum_signers)
def test_a_quorum_of_real_signatures_verifies(
    rank: int, attempt: int, kind: CertKind, signers: tuple[int, ...]
) -> None:
    frame = synthetic(rank).with_certificate(certificate(synthetic(rank), kind, attempt, signers))
    checker = CertificateChecker(GENESIS)
    assert checker.valid(frame)
    assert checker.valid(frame, kind)
    assert not checker.valid(frame, CertKind.COMMIT if kind is CertKind.VOTES else CertKind.VOTES)
    assert checker.valid(frame)  # the remembered verdict agrees
    assert not checker.valid(frame.bare())


@given(rank=ranks, attempt=attempts, kind=kinds, signers=minority_signers)
def test_fewer_than_a_quorum_is_refused(
    rank: int, attempt: int, kind: CertKind, signers: tuple[int, ...]
) -> None:
    frame = synthetic(rank)
    assert not CertificateChecker(GENESIS).valid(
        frame.with_certificate(certificate(frame, kind, attempt, signers))
    )


@given(
    rank=ranks,
    attempt=attempts,
    kind=kinds,
    signers=quorum_signers,
    position=st.integers(0, 3),
    forgery=st.binary(min_size=64, max_size=64),
)
def test_a_forged_signature_is_refused_even_after_the_genuine_certificate(
    rank: int,
    attempt: int,
    kind: CertKind,
    signers: tuple[int, ...],
    position: int,
    forgery: bytes,
) -> None:
    frame = synthetic(rank)
    genuine = certificate(frame, kind, attempt, signers)
    index = position % len(signers)
    if forgery == genuine.signatures[index]:
        forgery = bytes(b ^ 1 for b in forgery)
    sigs = list(genuine.signatures)
    sigs[index] = forgery
    forged = replace(genuine, signatures=tuple(sigs))
    checker = CertificateChecker(GENESIS)
    assert checker.valid(frame.with_certificate(genuine))
    assert not checker.valid(frame.with_certificate(forged))
    # And a forgery seen first must not spoil the genuine certificate with the same signers.
    checker = CertificateChecker(GENESIS)
    assert not checker.valid(frame.with_certificate(forged))
    assert checker.valid(frame.with_certificate(genuine))


@given(rank=ranks, attempt=attempts, kind=kinds, signers=quorum_signers, data=st.data())
def test_swapped_signatures_are_refused(
    rank: int, attempt: int, kind: CertKind, signers: tuple[int, ...], data: st.DataObject
) -> None:
    frame = synthetic(rank)
    genuine = certificate(frame, kind, attempt, signers)
    first = data.draw(st.integers(0, len(signers) - 2))
    second = data.draw(st.integers(first + 1, len(signers) - 1))
    sigs = list(genuine.signatures)
    sigs[first], sigs[second] = sigs[second], sigs[first]
    checker = CertificateChecker(GENESIS)
    assert checker.valid(frame.with_certificate(genuine))
    assert not checker.valid(frame.with_certificate(replace(genuine, signatures=tuple(sigs))))


@given(rank=ranks, attempt=attempts, kind=kinds, signers=quorum_signers)
def test_signer_order_and_count_must_match(
    rank: int, attempt: int, kind: CertKind, signers: tuple[int, ...]
) -> None:
    frame = synthetic(rank)
    genuine = certificate(frame, kind, attempt, signers)
    checker = CertificateChecker(GENESIS)
    # The same signatures listed in descending order (each still beside its signer's index).
    descending = Certificate(
        kind, attempt, tuple(reversed(signers)), tuple(reversed(genuine.signatures))
    )
    # A signer listed twice, with its real signature twice, on top of a quorum.
    doubled = Certificate(
        kind,
        attempt,
        (signers[0], *signers),
        (genuine.signatures[0], *genuine.signatures),
    )
    missing_signature = replace(genuine, signatures=genuine.signatures[:-1])
    extra_signature = replace(genuine, signatures=(*genuine.signatures, genuine.signatures[0]))
    for bad in (descending, doubled, missing_signature, extra_signature):
        assert not checker.valid(frame.with_certificate(bad))
    assert checker.valid(frame.with_certificate(genuine))


def test_a_prover_counted_twice_does_not_make_a_quorum() -> None:
    frame = synthetic(5)
    statement = statement_of(CertKind.VOTES, 5, 0, frame.id)
    sig = [sign(signer(i), NETWORK, statement) for i in range(4)]
    checker = CertificateChecker(GENESIS)
    assert not checker.valid(
        frame.with_certificate(Certificate(CertKind.VOTES, 0, (0, 1, 1), (sig[0], sig[1], sig[1])))
    )


@pytest.mark.parametrize("signers", [(0, 1, 4), (0, 1, 99), (-1, 0, 1), (-4, 0, 1), (-3, -2, 0)])
def test_a_signer_index_out_of_range_is_refused(signers: tuple[int, ...]) -> None:
    frame = synthetic(5)
    statement = statement_of(CertKind.COMMIT, 5, 2, frame.id)
    # Each index gets the signature of the prover Python's indexing would find there (if any),
    # so only the index itself is wrong; (-4, 0, 1) would count prover 0 twice.
    sigs = tuple(sign(signer(i % 4), NETWORK, statement) for i in signers)
    bad = frame.with_certificate(Certificate(CertKind.COMMIT, 2, signers, sigs))
    assert not CertificateChecker(GENESIS).valid(bad)
    assert not CertificateChecker(GENESIS).valid(bad, CertKind.COMMIT)


@given(
    rank=st.integers(min_value=0, max_value=2**62),
    attempt=attempts,
    kind=kinds,
    signers=quorum_signers,
    change=st.sampled_from(["frame", "attempt", "rank", "network"]),
)
def test_signatures_over_another_statement_are_refused(
    rank: int, attempt: int, kind: CertKind, signers: tuple[int, ...], change: str
) -> None:
    frame = synthetic(rank)
    other = {
        "frame": certificate(frame, kind, attempt, signers, frame_id=synthetic(rank, b"y").id),
        "attempt": Certificate(
            kind, attempt, signers, certificate(frame, kind, attempt + 1, signers).signatures
        ),
        "rank": certificate(frame, kind, attempt, signers, rank=rank + 1),
        "network": certificate(frame, kind, attempt, signers, network="other-net"),
    }[change]
    assert not CertificateChecker(GENESIS).valid(frame.with_certificate(other))


@given(rank=ranks, attempt=attempts, signers=quorum_signers)
def test_a_votes_certificate_is_not_a_commit(
    rank: int, attempt: int, signers: tuple[int, ...]
) -> None:
    frame = synthetic(rank)
    votes = certificate(frame, CertKind.VOTES, attempt, signers)
    relabelled = certificate(frame, CertKind.COMMIT, attempt, signers, signed_kind=CertKind.VOTES)
    checker = CertificateChecker(GENESIS)
    assert checker.valid(frame.with_certificate(votes), CertKind.VOTES)
    assert not checker.valid(frame.with_certificate(votes), CertKind.COMMIT)
    assert not checker.valid(frame.with_certificate(relabelled))
    assert not checker.valid(frame.with_certificate(relabelled), CertKind.COMMIT)
    # And the other way round: precommit signatures do not make a vote certificate.
    precommits = certificate(frame, CertKind.VOTES, attempt, signers, signed_kind=CertKind.COMMIT)
    assert not checker.valid(frame.with_certificate(precommits))


def test_build_orders_signers_by_index_and_leaves_out_non_provers() -> None:
    frame = synthetic(3)
    statement = statement_of(CertKind.VOTES, 3, 1, frame.id)
    by_key = {signer(i).public: sign(signer(i), NETWORK, statement) for i in (3, 0, 2)}
    by_key[OUTSIDER.public] = sign(OUTSIDER, NETWORK, statement)
    built = certs.build(GENESIS, CertKind.VOTES, 1, by_key)
    assert built.kind is CertKind.VOTES
    assert built.attempt == 1
    assert built.signers == (0, 2, 3)
    assert built.signatures == tuple(by_key[signer(i).public] for i in (0, 2, 3))
    assert CertificateChecker(GENESIS).valid(frame.with_certificate(built), CertKind.VOTES)


def test_a_small_verdict_cache_still_checks_every_certificate() -> None:
    checker = CertificateChecker(GENESIS, cache_size=1)
    frames = [synthetic(rank) for rank in range(1, 4)]
    good = [f.with_certificate(certificate(f, CertKind.COMMIT, 0, (0, 1, 2))) for f in frames]
    bad = [f.with_certificate(certificate(f, CertKind.COMMIT, 0, (0, 1))) for f in frames]
    for _ in range(2):
        assert [checker.valid(f) for f in good] == [True, True, True]
        assert [checker.valid(f) for f in bad] == [False, False, False]


# --- frames ---------------------------------------------------------------------------------


def _resigned(**changes: object) -> Callable[[Frame], Frame]:
    def corrupt(frame: Frame) -> Frame:
        return signed(replace(frame, **changes), KEYS[0])  # type: ignore[arg-type]

    return corrupt


def test_a_proven_frame_is_valid() -> None:
    frame = proven(KEYS[0])
    checker = FrameChecker(GENESIS)
    assert checker.problem(frame, GENESIS.frame()) is None
    assert checker.problem(frame, None) is None
    assert checker.problem(frame, GENESIS.frame()) is None  # the remembered proof agrees
    assert FrameChecker(GENESIS).problem(proven(KEYS[1]), GENESIS.frame()) is None
    assert FrameChecker(GENESIS).problem(proven(KEYS[2], ()), GENESIS.frame()) is None


def test_a_timestamp_ahead_of_the_clock_is_a_problem_only_for_now() -> None:
    frame = proven(KEYS[0])
    now = frame.timestamp - MAX_CLOCK_AHEAD_MS - 1
    checker = FrameChecker(GENESIS, clock=lambda: now)
    assert checker.ahead_of_clock(frame)
    assert checker.problem(frame, GENESIS.frame()) == AHEAD_OF_CLOCK
    assert checker.problem(frame, GENESIS.frame(), clock=False) is None  # asked apart
    now += 1
    assert not checker.ahead_of_clock(frame)
    assert checker.problem(frame, GENESIS.frame()) is None


def _other_vdf_output(frame: Frame) -> Frame:
    other = proven(KEYS[1])
    return signed(replace(frame, output=other.output, proof=other.proof), KEYS[0])


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


CORRUPTIONS: dict[str, tuple[Callable[[Frame], Frame], str]] = {
    "parent": (_resigned(parent=b"\x01" * HASH_SIZE), "does not extend the final frame"),
    "rank": (_resigned(round=2), "does not extend the final frame"),
    "rank zero": (_resigned(round=0), "does not extend the final frame"),
    "timestamp equal": (_resigned(timestamp=T0), "timestamp not after its parent's"),
    "timestamp before": (_resigned(timestamp=T0 - 1), "timestamp not after its parent's"),
    "outsider": (lambda _: proven(OUTSIDER), "prover not in the prover set"),
    "prover key": (
        lambda f: replace(f, prover=OUTSIDER.public),
        "prover not in the prover set",
    ),
    "difficulty": (lambda _: proven(KEYS[0], difficulty=DIFFICULTY + 1), "wrong difficulty"),
    "mutations": (_resigned(mutations=(b"alpha", b"gamma")), "mutations do not match their root"),
    "root": (_resigned(root=mutations_root((b"alpha",))), "mutations do not match their root"),
    "reordered": (_resigned(mutations=(b"beta", b"alpha")), "mutations do not match their root"),
    "repeated mutation": (_resigned(mutations=(b"alpha", b"alpha")), MUTATION_REPEATED),
    "empty mutation": (
        _resigned(mutations=(b"",), root=mutations_root((b"",))),
        "mutations out of bounds",
    ),
    "large mutation": (
        _resigned(
            mutations=(b"m" * (MAX_MUTATION_SIZE + 1),),
            root=mutations_root((b"m" * (MAX_MUTATION_SIZE + 1),)),
        ),
        "mutations out of bounds",
    ),
    "many mutations": (
        _resigned(
            mutations=(b"m",) * (MAX_MUTATIONS_PER_FRAME + 1),
            root=mutations_root((b"m",) * (MAX_MUTATIONS_PER_FRAME + 1)),
        ),
        "mutations out of bounds",
    ),
    "signed by another prover": (lambda f: signed(f, KEYS[1]), "bad prover signature"),
    "signed in another network": (
        lambda f: signed(f, KEYS[0], "other-net"),
        "bad prover signature",
    ),
    "timestamp after signing": (
        lambda f: replace(f, timestamp=f.timestamp + 1),
        "bad prover signature",
    ),
    "blank signature": (lambda f: replace(f, signature=bytes(64)), "bad prover signature"),
    "short signature": (lambda f: replace(f, signature=f.signature[:63]), "bad prover signature"),
    "output of another challenge": (_other_vdf_output, "bad proof of work"),
    "output flipped": (
        lambda f: signed(replace(f, output=_flip_last(f.output)), KEYS[0]),
        "bad proof of work",
    ),
    "proof flipped": (
        lambda f: signed(replace(f, proof=_flip_last(f.proof)), KEYS[0]),
        "bad proof of work",
    ),
    "output and proof swapped": (
        lambda f: signed(replace(f, output=f.proof, proof=f.output), KEYS[0]),
        "bad proof of work",
    ),
    "identity output": (
        _resigned(output=b"\x04" + bytes(vdf.FORM_SIZE - 1)),
        "bad proof of work",
    ),
    "zero proof": (_resigned(proof=bytes(vdf.FORM_SIZE)), "bad proof of work"),
    "short output": (_resigned(output=b"\x08" * 32), "bad proof of work"),
    "empty proof": (_resigned(proof=b""), "bad proof of work"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_corruption_of_a_frame_is_named(name: str) -> None:
    corrupt, expected = CORRUPTIONS[name]
    bad = corrupt(proven(KEYS[0]))
    assert bad.id != proven(KEYS[0]).id
    checker = FrameChecker(GENESIS)
    assert checker.problem(proven(KEYS[0]), GENESIS.frame()) is None
    assert checker.problem(bad, GENESIS.frame()) == expected


def test_a_frame_checked_against_another_parent_does_not_extend_it() -> None:
    frame = proven(KEYS[0])
    other_parent = replace(GENESIS.frame(), timestamp=T0 - 5)
    checker = FrameChecker(GENESIS)
    assert checker.problem(frame, other_parent) == "does not extend the final frame"
    assert checker.problem(frame, frame) == "does not extend the final frame"
    # Without a parent only what the frame proves alone is checked.
    assert checker.problem(_resigned(parent=b"\x01" * HASH_SIZE)(frame), None) == (
        "bad proof of work"
    )
    assert checker.problem(_resigned(timestamp=1)(frame), None) is None


def test_a_final_frame_needs_a_commit_certificate() -> None:
    frame = proven(KEYS[0])
    checker = FrameChecker(GENESIS)
    parent = GENESIS.frame()
    assert checker.final_problem(frame, parent) == "no valid commit certificate"
    votes = frame.with_certificate(certificate(frame, CertKind.VOTES, 0, (0, 1, 2)))
    assert checker.final_problem(votes, parent) == "no valid commit certificate"
    short = frame.with_certificate(certificate(frame, CertKind.COMMIT, 0, (0, 1)))
    assert checker.final_problem(short, parent) == "no valid commit certificate"
    commit = frame.with_certificate(certificate(frame, CertKind.COMMIT, 3, (0, 2, 3)))
    assert checker.final_problem(commit, parent) is None
    assert checker.final_problem(commit, None) is None
    # A commit does not excuse the frame itself.
    stale = _resigned(timestamp=T0)(frame)
    stale = stale.with_certificate(certificate(stale, CertKind.COMMIT, 0, (0, 1, 2)))
    assert checker.final_problem(stale, parent) == "timestamp not after its parent's"


# --- mempool --------------------------------------------------------------------------------


def test_admission_results() -> None:
    pool = Mempool(capacity=3)
    assert pool.add(b"") is Admission.EMPTY
    assert pool.add(b"x" * (MAX_MUTATION_SIZE + 1)) is Admission.TOO_LARGE
    assert pool.add(b"x" * MAX_MUTATION_SIZE) is Admission.ADDED
    assert pool.add(b"one") is Admission.ADDED
    assert pool.add(b"one") is Admission.DUPLICATE
    assert pool.add(b"two") is Admission.ADDED
    assert len(pool) == 3
    assert pool.add(b"three") is Admission.FULL
    assert pool.add(b"two") is Admission.DUPLICATE  # known beats full
    assert len(pool) == 3


def test_take_is_first_in_first_out_bounded_by_bytes_and_keeps_the_mutations() -> None:
    pool = Mempool()
    items = [f"{i:04}".encode() * 250 for i in range(60)]  # 1,000 bytes each
    for item in items:
        assert pool.add(item) is Admission.ADDED
    fits = MAX_FRAME_MUTATION_BYTES // (1000 + MUTATION_OVERHEAD)
    assert pool.take() == tuple(items[:fits])
    assert (
        mutation_bytes(pool.take()) <= MAX_FRAME_MUTATION_BYTES < mutation_bytes(items[: fits + 1])
    )
    assert pool.take(3 * 1003) == tuple(items[:3])
    assert pool.take(3 * 1003 - 1) == tuple(items[:2])
    assert pool.take(0) == ()
    assert len(pool) == len(items)


@given(st.lists(st.binary(min_size=1, max_size=40), unique=True, max_size=30), st.integers(0, 400))
def test_take_returns_the_oldest_that_fit_in_arrival_order(items: list[bytes], room: int) -> None:
    pool = Mempool()
    for item in items:
        pool.add(item)
    taken = pool.take(room)
    assert taken == tuple(items[: len(taken)])
    assert mutation_bytes(taken) <= room
    assert len(taken) == len(items) or mutation_bytes(items[: len(taken) + 1]) > room


def test_finalized_mutations_leave_and_are_remembered() -> None:
    pool = Mempool(capacity=2)
    assert pool.add(b"a") is Admission.ADDED
    assert pool.add(b"b") is Admission.ADDED
    assert pool.add(b"c") is Admission.FULL
    pool.finalized([b"a", b"z"])
    assert len(pool) == 1
    assert pool.take() == (b"b",)
    assert pool.add(b"a") is Admission.DUPLICATE
    assert pool.add(b"z") is Admission.DUPLICATE  # finalized elsewhere, never pending here
    assert pool.add(b"c") is Admission.ADDED  # room again
    assert pool.take() == (b"b", b"c")


def test_done_mutations_are_remembered_up_to_a_bound() -> None:
    pool = Mempool(remembered=2)
    pool.finalized([b"first", b"second", b"third"])
    assert pool.add(b"first") is Admission.ADDED  # forgotten: the oldest went first
    assert pool.add(b"second") is Admission.DUPLICATE
    assert pool.add(b"third") is Admission.DUPLICATE


def test_prover_ids_name_their_keys() -> None:
    assert ProverId(KEYS[0].public) == KEYS[0].prover
    assert str(KEYS[0].prover) == KEYS[0].prover.identity()
