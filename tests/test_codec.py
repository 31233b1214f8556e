"""Wire codec: every kind round-trips; anything else, however mangled, is a CodecError."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import replace

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.chain.mempool import MAX_FRAME_MUTATION_BYTES, MAX_MUTATION_SIZE
from p2pnode.chain.types import Certificate, CertKind, Frame, Vote, canonical
from p2pnode.wire import codec
from p2pnode.wire.codec import CodecError, MessageKind

uints = st.integers(min_value=0, max_value=2**63 - 1)
small = st.integers(min_value=0, max_value=2**20)
hashes = st.binary(min_size=32, max_size=32)
keys = hashes
signatures = st.binary(min_size=64, max_size=64)
forms = st.binary(min_size=100, max_size=100)
texts = st.text(max_size=40)


@st.composite
def certificates(draw: st.DrawFn, kind: CertKind | None = None) -> Certificate:
    signers = draw(st.lists(uints, min_size=1, max_size=6, unique=True))
    sigs = draw(st.lists(signatures, min_size=len(signers), max_size=len(signers)))
    chosen = kind if kind is not None else draw(st.sampled_from(CertKind))
    return Certificate(chosen, draw(small), tuple(sorted(signers)), tuple(sigs))


@st.composite
def frames(draw: st.DrawFn, certificate: st.SearchStrategy[Certificate | None]) -> Frame:
    return Frame(
        round=draw(uints),
        parent=draw(hashes),
        prover=draw(keys),
        timestamp=draw(uints),
        root=draw(hashes),
        mutations=tuple(draw(st.lists(st.binary(max_size=64), max_size=5))),
        difficulty=draw(uints),
        output=draw(forms),
        proof=draw(forms),
        signature=draw(signatures),
        certificate=draw(certificate),
    )


bare_frames = frames(st.none())
certified_frames = frames(certificates())
committed_frames = frames(certificates(CertKind.COMMIT))

votes = st.builds(Vote, uints, uints, hashes, keys, keys, signatures)

messages: st.SearchStrategy[codec.Message] = st.one_of(
    st.builds(codec.Liveness, uints, keys, hashes, signatures),
    st.builds(codec.Proposal, bare_frames),
    st.builds(codec.VoteMsg, votes),
    st.builds(codec.Confirmation, certified_frames, keys, signatures),
    st.builds(
        codec.MutationMsg,
        st.lists(st.binary(max_size=MAX_MUTATION_SIZE), min_size=1, max_size=8).map(tuple),
    ),
    st.builds(codec.SyncRequest, uints, st.integers(1, codec.MAX_SYNC_FRAMES)),
    st.builds(codec.SyncResponse, st.lists(committed_frames, max_size=3).map(tuple)),
    st.builds(codec.Peers, texts, st.lists(texts, max_size=codec.MAX_ADDRS).map(tuple)),
)


def frame(certificate: Certificate | None = None) -> Frame:
    return Frame(
        round=1,
        parent=b"p" * 32,
        prover=b"k" * 32,
        timestamp=2,
        root=b"r" * 32,
        mutations=(b"m",),
        difficulty=3,
        output=b"o" * 100,
        proof=b"q" * 100,
        signature=b"s" * 64,
        certificate=certificate,
    )


COMMIT = Certificate(CertKind.COMMIT, 0, (0, 2), (b"a" * 64, b"b" * 64))
SAMPLES: list[codec.Message] = [
    codec.Liveness(1, b"k" * 32, b"r" * 32, b"s" * 64),
    codec.Proposal(frame()),
    codec.VoteMsg(Vote(1, 0, b"f" * 32, b"p" * 32, b"v" * 32, b"s" * 64)),
    codec.Confirmation(frame(COMMIT), b"k" * 32, b"s" * 64),
    codec.MutationMsg((b"mutation", b"another")),
    codec.SyncRequest(0, 10),
    codec.SyncResponse((frame(COMMIT), frame(COMMIT))),
    codec.Peers("12D3KooW", ("/ip4/127.0.0.1/tcp/4001",)),
]


def raw(kind: int, body: object, version: object = 1) -> bytes:
    """A canonical envelope around any body: for payloads `encode` would refuse to make."""
    return canonical([version, kind, body])


def frame_value(value: Frame) -> list[object]:
    return [*value.fields(signed=True), certificate_value(value.certificate)]


def certificate_value(value: Certificate | None) -> object:
    if value is None:
        return None
    return [int(value.kind), value.attempt, list(value.signers), list(value.signatures)]


def rejects(data: bytes, expected: MessageKind | None = None) -> str:
    with pytest.raises(CodecError) as caught:
        codec.decode(data, expected)
    return str(caught.value)


def decodes_only_to_itself(data: bytes) -> None:
    """`decode` either refuses `data` with a CodecError or returns what encodes back to it."""
    try:
        message = codec.decode(data)
    except CodecError:
        return
    assert codec.encode(message) == data


# --- round trips ----------------------------------------------------------------------------


@given(message=messages)
def test_every_kind_round_trips(message: codec.Message) -> None:
    data = codec.encode(message)
    decoded = codec.decode(data)
    assert decoded == message
    # Equality skips certificates and vote signatures: compare the encodings too.
    assert codec.encode(decoded) == data
    assert codec.decode(data, message.KIND) == message
    assert codec.message_id(data) == hashlib.sha256(data).digest()


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_samples_round_trip_and_refuse_other_kinds(message: codec.Message) -> None:
    data = codec.encode(message)
    assert codec.decode(data, message.KIND) == message
    for kind in MessageKind:
        if kind is not message.KIND:
            assert "expected" in rejects(data, kind)


def test_the_samples_cover_every_kind() -> None:
    assert {message.KIND for message in SAMPLES} == set(MessageKind)


def test_decoded_records_keep_certificates_and_signatures() -> None:
    confirmation = codec.decode(codec.encode(SAMPLES[3]), MessageKind.CONFIRMATION)
    assert confirmation.frame.certificate == COMMIT
    assert confirmation.frame.id == frame().id
    vote = codec.decode(codec.encode(SAMPLES[2]), MessageKind.VOTE).vote
    assert vote.signature == b"s" * 64


FULL = (b"x" * MAX_MUTATION_SIZE,) * (MAX_FRAME_MUTATION_BYTES // (MAX_MUTATION_SIZE + 3))
"""As many of the largest mutations as a frame's budget holds."""
BIGGEST_CERTIFICATE = Certificate(
    CertKind.VOTES, 2**63 - 1, tuple(range(codec.MAX_SIGNERS)), (b"s" * 64,) * codec.MAX_SIGNERS
)


def test_limits_at_the_edge_are_accepted() -> None:
    most = frame()
    most = replace(most, mutations=(b"x" * MAX_MUTATION_SIZE,) + (b"",) * (codec.MAX_MUTATIONS - 1))
    smallest = (b"m",) * (MAX_FRAME_MUTATION_BYTES // 4)
    for message in (
        codec.Proposal(most),
        codec.MutationMsg(FULL),
        codec.MutationMsg(smallest),
        codec.SyncResponse((frame(COMMIT),) * codec.MAX_SYNC_FRAMES),
        codec.SyncRequest(2**63 - 1, codec.MAX_SYNC_FRAMES),
        codec.Peers("p" * 256, ("a" * 256,) * codec.MAX_ADDRS),
        codec.Confirmation(frame(BIGGEST_CERTIFICATE), b"k" * 32, b"s" * 64),
        # A full frame with every prover's signature still fits one gossip message.
        codec.Confirmation(
            replace(frame(BIGGEST_CERTIFICATE), mutations=FULL), b"k" * 32, b"s" * 64
        ),
        codec.Confirmation(
            replace(frame(BIGGEST_CERTIFICATE), mutations=smallest), b"k" * 32, b"s" * 64
        ),
    ):
        data = codec.encode(message)
        assert codec.decode(data) == message


# --- bounds and exact types -----------------------------------------------------------------


def liveness(*body: object) -> bytes:
    return raw(MessageKind.LIVENESS, list(body))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        # arity
        (liveness(1, b"k" * 32, b"r" * 32), "liveness: expected 4 elements, got 3"),
        (liveness(1, b"k" * 32, b"r" * 32, b"s" * 64, 0), "liveness: expected 4 elements, got 5"),
        # negative
        (
            liveness(-1, b"k" * 32, b"r" * 32, b"s" * 64),
            "liveness.rank: expected an integer in [0, 2**63)",
        ),
        # too large
        (
            liveness(2**63, b"k" * 32, b"r" * 32, b"s" * 64),
            "liveness.rank: expected an integer in [0, 2**63)",
        ),
        # a bignum is refused for its CBOR tag (2), before any integer bound
        (
            liveness(2**64, b"k" * 32, b"r" * 32, b"s" * 64),
            "malformed CBOR: error decoding semantic tag 2",
        ),
        # a bool is no int
        (
            liveness(True, b"k" * 32, b"r" * 32, b"s" * 64),
            "liveness.rank: expected an integer in [0, 2**63)",
        ),
        # no floats
        (
            liveness(1.0, b"k" * 32, b"r" * 32, b"s" * 64),
            "liveness.rank: expected an integer in [0, 2**63)",
        ),
        (
            liveness(None, b"k" * 32, b"r" * 32, b"s" * 64),
            "liveness.rank: expected an integer in [0, 2**63)",
        ),
        # key size
        (
            liveness(1, b"k" * 31, b"r" * 32, b"s" * 64),
            "liveness.prover: expected 32 bytes, got 31",
        ),
        # hash size
        (liveness(1, b"k" * 32, b"r" * 33, b"s" * 64), "liveness.root: expected 32 bytes, got 33"),
        # signature size
        (
            liveness(1, b"k" * 32, b"r" * 32, b"s" * 65),
            "liveness.signature: expected 64 bytes, got 65",
        ),
        # text is no bytes
        (liveness(1, "k" * 32, b"r" * 32, b"s" * 64), "liveness.prover: expected a byte string"),
        (liveness(1, [b"k" * 32], b"r" * 32, b"s" * 64), "liveness.prover: expected a byte string"),
        # no maps
        (raw(MessageKind.LIVENESS, {"rank": 1}), "liveness: expected an array"),
        (
            raw(MessageKind.LIVENESS, [1, {}, b"r" * 32, b"s" * 64]),
            "liveness.prover: expected a byte string",
        ),
        # version
        (raw(MessageKind.SYNC_REQUEST, [4, 8], version=2), "envelope.version: expected 1"),
        (raw(MessageKind.SYNC_REQUEST, [4, 8], version=True), "envelope.version: expected 1"),
        # unknown kinds
        (raw(0, [4, 8]), "envelope.kind: unknown message kind 0"),
        # reserved numbers
        (raw(8, [4, b"f" * 32]), "envelope.kind: unknown message kind 8"),
        (raw(10, [b"{}"]), "envelope.kind: unknown message kind 10"),
        (raw(11, [4, 8]), "envelope.kind: unknown message kind 11"),
        (raw(2**63 - 1, [4, 8]), "envelope.kind: unknown message kind 9223372036854775807"),
        # envelope arity
        (canonical([1, MessageKind.SYNC_REQUEST]), "envelope: expected 3 elements, got 2"),
        (
            canonical([1, MessageKind.SYNC_REQUEST, [4, 8], None]),
            "envelope: expected 3 elements, got 4",
        ),
        (canonical({"version": 1}), "envelope: expected an array"),
        (canonical(b"bytes"), "envelope: expected an array"),
        # limit out of range
        (raw(MessageKind.SYNC_REQUEST, [0, 0]), "sync_request.limit: 0 is not in [1, 64]"),
        (
            raw(MessageKind.SYNC_REQUEST, [0, codec.MAX_SYNC_FRAMES + 1]),
            "sync_request.limit: 65 is not in [1, 64]",
        ),
        (
            raw(MessageKind.MUTATION, [[b"x" * (MAX_MUTATION_SIZE + 1)]]),
            "mutation.mutations: 1025 bytes exceeds 1024",
        ),
        (raw(MessageKind.PEERS, ["p" * 257, []]), "peers.peer_id: 257 characters exceeds 256"),
        (raw(MessageKind.PEERS, ["p", ["a" * 257]]), "peers.addrs: 257 characters exceeds 256"),
        (
            raw(MessageKind.PEERS, ["p", ["a"] * (codec.MAX_ADDRS + 1)]),
            "peers.addrs: 17 elements exceeds 16",
        ),
        (raw(MessageKind.PEERS, ["p", [["a"]]]), "peers.addrs: expected a text string"),
        (
            raw(MessageKind.SYNC_RESPONSE, [[frame_value(frame(COMMIT))] * 65]),
            "sync_response.frames: 65 elements exceeds 64",
        ),
        # no certificate
        (
            raw(MessageKind.SYNC_RESPONSE, [[frame_value(frame())]]),
            "sync_response.frame: a synced frame carries its commit certificate",
        ),
        (
            raw(  # a vote certificate does not make a frame final
                MessageKind.SYNC_RESPONSE,
                [[frame_value(frame(replace(COMMIT, kind=CertKind.VOTES)))]],
            ),
            "sync_response.frame: a synced frame carries its commit certificate",
        ),
        # proposals are bare
        (
            raw(MessageKind.PROPOSAL, [frame_value(frame(COMMIT))]),
            "proposal.frame: a proposal carries no certificate",
        ),
        (
            raw(MessageKind.CONFIRMATION, [frame_value(frame()), b"k" * 32, b"s" * 64]),
            "confirmation.frame: a confirmation carries a certificate",
        ),
    ],
)
def test_out_of_bounds_or_mistyped_bodies_are_rejected_for_their_reason(
    data: bytes, reason: str
) -> None:
    assert rejects(data) == reason


def confirmation_with(certificate: object) -> bytes:
    value = frame_value(frame())
    value[-1] = certificate
    return raw(MessageKind.CONFIRMATION, [value, b"k" * 32, b"s" * 64])


CERT = "confirmation.frame.cert"


@pytest.mark.parametrize(
    ("certificate", "reason"),
    [
        ([2, 0, [0, 2], [b"a" * 64]], f"{CERT}: 2 signers but 1 signatures"),
        ([2, 0, [], []], f"{CERT}: no signers"),
        ([2, 0, [2, 0], [b"a" * 64, b"b" * 64]], f"{CERT}.signers: not strictly ascending"),
        ([2, 0, [1, 1], [b"a" * 64, b"b" * 64]], f"{CERT}.signers: not strictly ascending"),
        ([3, 0, [0], [b"a" * 64]], f"{CERT}.kind: unknown certificate kind 3"),
        ([0, 0, [0], [b"a" * 64]], f"{CERT}.kind: unknown certificate kind 0"),
        ([2, -1, [0], [b"a" * 64]], f"{CERT}.attempt: expected an integer in [0, 2**63)"),
        ([2, 0, [0], [b"a" * 63]], f"{CERT}.signatures: expected 64 bytes, got 63"),
        ([2, 0, [-1], [b"a" * 64]], f"{CERT}.signers: expected an integer in [0, 2**63)"),
        ([2, 0, [0], [b"a" * 64], None], f"{CERT}: expected 4 elements, got 5"),
        # Too many signers, in a payload small enough to reach the bound.
        ([2, 0, list(range(1025)), [b"a" * 64]], f"{CERT}.signers: 1025 elements exceeds 64"),
        ([2, 0, 0, b"a" * 64], f"{CERT}.signers: expected an array"),
        (b"certificate", f"{CERT}: expected an array"),
    ],
)
def test_malformed_certificates_are_rejected_for_their_reason(
    certificate: object, reason: str
) -> None:
    assert rejects(confirmation_with(certificate)) == reason


@pytest.mark.parametrize(
    ("index", "value", "reason"),
    [
        (1, b"p" * 31, "frame.parent: expected 32 bytes, got 31"),
        (2, b"k" * 33, "frame.prover: expected 32 bytes, got 33"),
        (4, b"", "frame.root: expected 32 bytes, got 0"),
        (5, [b"m"] * (codec.MAX_MUTATIONS + 1), "frame.mutations: 12289 elements exceeds"),
        (5, [b"m" * (MAX_MUTATION_SIZE + 1)], "frame.mutations: 1025 bytes exceeds 1024"),
        (5, [["m"]], "frame.mutations: expected a byte string"),
        (5, b"m", "frame.mutations: expected an array"),
        (7, b"o" * 99, "frame.output: expected 100 bytes, got 99"),
        (8, b"q" * 101, "frame.proof: expected 100 bytes, got 101"),
        (9, b"s" * 63, "frame.signature: expected 64 bytes, got 63"),
        (10, 0, "frame.cert: expected an array"),
    ],
)
def test_malformed_frames_are_rejected_for_the_field_at_fault(
    index: int, value: object, reason: str
) -> None:
    fields = frame_value(frame())
    fields[index] = value
    assert reason in rejects(raw(MessageKind.PROPOSAL, [fields]))


def test_a_frame_without_its_last_field_is_rejected_for_its_arity() -> None:
    shorter = raw(MessageKind.PROPOSAL, [frame_value(frame())[:-1]])
    assert "proposal.frame: expected 11 elements, got 10" in rejects(shorter)


RANK = r"liveness.rank: expected an integer in \[0, 2\*\*63\)"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (codec.Liveness(1, b"k" * 31, b"r" * 32, b"s" * 64), "prover: expected 32 bytes, got 31"),
        (codec.Liveness(-1, b"k" * 32, b"r" * 32, b"s" * 64), RANK),
        (codec.Liveness(True, b"k" * 32, b"r" * 32, b"s" * 64), RANK),
        (codec.SyncRequest(0, 0), r"sync_request.limit: 0 is not in \[1, 64\]"),
        (codec.Proposal(frame(COMMIT)), "a proposal carries no certificate"),
        (codec.Confirmation(frame(), b"k" * 32, b"s" * 64), "a confirmation carries a cert"),
        (
            codec.Confirmation(frame(replace(COMMIT, signers=(2, 0))), b"k" * 32, b"s" * 64),
            "cert.signers: not strictly ascending",
        ),
        (codec.Peers("p", ("a",) * 17), "peers.addrs: 17 elements exceeds 16"),
        (
            codec.MutationMsg((bytearray(b"x"),)),  # type: ignore[arg-type]
            "mutation.mutations: expected a byte string",
        ),
    ],
)
def test_encode_refuses_what_decode_would_reject(message: codec.Message, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        codec.encode(message)


def test_oversized_payloads_are_rejected_before_decoding() -> None:
    assert "exceeds" in rejects(b"\x00" * (codec.MAX_MESSAGE_SIZE + 1))
    big = replace(frame(COMMIT), mutations=(b"x" * 1024,) * 5)
    response = codec.SyncResponse((big,) * codec.MAX_SYNC_FRAMES)
    with pytest.raises(CodecError, match="exceeds"):
        codec.encode(response)
    data = raw(MessageKind.SYNC_RESPONSE, [[frame_value(big)] * codec.MAX_SYNC_FRAMES])
    assert len(data) > codec.MAX_MESSAGE_SIZE
    assert "exceeds" in rejects(data)


def test_non_bytes_payloads_are_rejected() -> None:
    data = codec.encode(SAMPLES[0])
    for payload in (bytearray(data), memoryview(data), data.hex()):
        assert rejects(payload) == "a payload is a byte string"  # type: ignore[arg-type]


# --- CBOR strictness ------------------------------------------------------------------------

LIVE = codec.encode(codec.Liveness(4, b"k" * 32, b"r" * 32, b"s" * 64))
HEAD = b"\x83\x01\x01\x84"
"""The envelope array, version 1, kind LIVENESS and the body array of LIVE."""
KEY = b"k" * 32
AFTER_KEY = LIVE[len(HEAD) + 1 + 2 + 32 :]
"""The root and the signature, after the rank (one byte) and the key (a two-byte head)."""


CANONICAL = "not the canonical encoding"
MALFORMED = "malformed CBOR: "
NOT_A_RANK = "liveness.rank: expected an integer in [0, 2**63)"
SHORT = MALFORMED + "premature end of stream"
INDEFINITE = "encountered indefinite length but it has been disabled"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (LIVE + b"\x00", CANONICAL),  # trailing bytes
        (LIVE[:-1], SHORT),  # truncated
        (b"", SHORT),
        (b"\xd9\xd9\xf7" + LIVE, MALFORMED + "error decoding semantic tag 55799"),  # self-described
        (b"\xc0" + LIVE, MALFORMED + "error decoding semantic tag 0"),  # tags around the envelope
        (b"\xc1" + LIVE, MALFORMED + "error decoding semantic tag 1"),
        (b"\xd8\x18" + LIVE, MALFORMED + "error decoding semantic tag 24"),
        (b"\xd8\x2a" + LIVE, MALFORMED + "error decoding semantic tag 42"),
        (b"\xd8\x1c" + LIVE, MALFORMED + "error decoding semantic tag 28"),  # shareable value
        (b"\x98\x03" + LIVE[1:], CANONICAL),  # long-form array length
        (b"\x9f" + LIVE[1:] + b"\xff", MALFORMED + "error decoding array: " + INDEFINITE),
        (b"\x83\x18\x01" + LIVE[2:], CANONICAL),  # long-form integer
        (b"\x83\x01\x18\x01" + LIVE[3:], CANONICAL),
        (HEAD + b"\x04\x59\x00\x20" + KEY + AFTER_KEY, CANONICAL),  # long-form byte string length
        (
            HEAD + b"\x04\x5f\x58\x20" + KEY + b"\xff" + AFTER_KEY,
            MALFORMED + "error decoding byte string: " + INDEFINITE,
        ),
        # A bignum for a small int: refused for its tag, as every tag is.
        (
            HEAD + b"\xc2\x41\x04\x58\x20" + KEY + AFTER_KEY,
            MALFORMED + "error decoding semantic tag 2",
        ),
        # Plain CBOR values the schema refuses where an integer belongs.
        (HEAD + b"\xf9\x44\x00\x58\x20" + KEY + AFTER_KEY, NOT_A_RANK),  # half-float 4.0
        (HEAD + b"\xf7\x58\x20" + KEY + AFTER_KEY, NOT_A_RANK),  # undefined
        (HEAD + b"\xf0\x58\x20" + KEY + AFTER_KEY, NOT_A_RANK),  # simple value 16
        (HEAD + b"\x24\x58\x20" + KEY + AFTER_KEY, NOT_A_RANK),  # negative integer
        (b"\x83\x01\x09\x82\x61\xff\x80", MALFORMED + "error decoding text string"),  # bad UTF-8
        (
            b"\x83\x01\x09\x82\x7f\x61a\xff\x80",
            MALFORMED + "error decoding text string: " + INDEFINITE,
        ),
        (b"\x9b" + b"\xff" * 8, SHORT),  # absurd declared lengths
        (b"\x5b\x7f" + b"\xff" * 7, SHORT),
        (b"\x83\x01\x05\x81\x5b\x00\x00\x00\x01\x00\x00\x00\x00", SHORT),
        (b"\x81" * 100_000, "payload of 100000 bytes exceeds 57344"),  # deep nesting, and big
        (
            b"\x83\x01\x09\x82\x61p\x81" + b"\x81" * 10 + b"\x80",
            MALFORMED + "maximum container nesting depth (6) exceeded",
        ),
        (b"\xff", MALFORMED + "break code encountered where a data item was expected"),
        (b"\x1c", MALFORMED + "error decoding unsigned integer: unknown unsigned integer subtype"),
    ],
)
def test_non_canonical_or_non_plain_cbor_is_rejected_for_its_reason(
    data: bytes, reason: str
) -> None:
    assert rejects(data).startswith(reason)


def test_the_hand_made_payloads_are_built_on_the_canonical_one() -> None:
    assert HEAD + b"\x04\x58\x20" + KEY + AFTER_KEY == LIVE
    assert codec.decode(LIVE) == codec.Liveness(4, KEY, b"r" * 32, b"s" * 64)


def test_nesting_beyond_the_deepest_message_is_rejected() -> None:
    # A sync response uses all six levels: a seventh anywhere is refused by the parser itself.
    response = codec.encode(codec.SyncResponse((frame(COMMIT),)))
    assert codec.decode(response) == codec.SyncResponse((frame(COMMIT),))
    assert "depth" in rejects(b"\x81" * 7 + b"\x00")


def _head(major: int, argument: int, width: int) -> bytes:
    """A CBOR head with `argument` in `width` extra bytes (0: inside the first byte)."""
    if width == 0:
        return bytes([major << 5 | argument])
    code = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | code]) + argument.to_bytes(width, "big")


def _minimal_width(argument: int) -> int:
    for width, limit in ((0, 24), (1, 2**8), (2, 2**16), (4, 2**32)):
        if argument < limit:
            return width
    return 8


@st.composite
def loose_encodings(draw: st.DrawFn, value: object) -> tuple[bytes, bool]:
    """Some encoding of `value` and whether it is the canonical one."""

    def head(major: int, argument: int) -> tuple[bytes, bool]:
        minimal = _minimal_width(argument)
        wider = [w for w in (0, 1, 2, 4, 8) if w >= minimal and (w or argument < 24)]
        width = draw(st.sampled_from(wider))
        return _head(major, argument, width), width == minimal

    if value is None:
        return b"\xf6", True
    if isinstance(value, int):
        return head(0, value)
    if isinstance(value, bytes | str):
        content = value if isinstance(value, bytes) else value.encode()
        major = 2 if isinstance(value, bytes) else 3
        if content and draw(st.booleans()):  # an indefinite-length string, in one chunk
            chunk, _ = head(major, len(content))
            return bytes([major << 5 | 31]) + chunk + content + b"\xff", False
        prefix, canonical_head = head(major, len(content))
        return prefix + content, canonical_head
    assert isinstance(value, list)
    parts = [draw(loose_encodings(item)) for item in value]
    body = b"".join(part for part, _ in parts)
    exact = all(ok for _, ok in parts)
    if draw(st.integers(0, 9)) == 0:
        return b"\x9f" + body + b"\xff", False
    prefix, canonical_head = head(4, len(value))
    return prefix + body, exact and canonical_head


@given(data=st.data())
def test_only_the_canonical_encoding_is_accepted(data: st.DataObject) -> None:
    message = data.draw(messages)
    value = cbor2.loads(codec.encode(message))
    encoded, is_canonical = data.draw(loose_encodings(value))
    if is_canonical:
        assert encoded == codec.encode(message)
        assert codec.decode(encoded) == message
    else:
        assert encoded != codec.encode(message)
        rejects(encoded)


def test_the_loose_encoder_agrees_with_cbor2_on_canonical_output() -> None:
    # Guards the test above: its "canonical" choice must really be canonical.
    for width in (0, 1, 2, 4, 8):
        if width >= _minimal_width(23):
            assert (_head(0, 23, width) == canonical(23)) == (width == 0)
    assert _head(2, 300, 2) + b"x" * 300 == canonical(b"x" * 300)
    assert _head(0, 2**40, 8) == canonical(2**40)


# --- fuzzing --------------------------------------------------------------------------------


@given(data=st.binary(max_size=2048))
def test_random_bytes_raise_nothing_but_codec_errors(data: bytes) -> None:
    decodes_only_to_itself(data)


@given(data=st.binary(max_size=64).map(lambda tail: LIVE[:4] + tail))
def test_random_bodies_behind_a_valid_prefix_raise_nothing_but_codec_errors(data: bytes) -> None:
    decodes_only_to_itself(data)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding after a few byte flips, insertions, deletions or a truncation."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        operation = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=9))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 9))]
        else:
            del data[position:]
    return bytes(data)


@given(data=mutated(messages.map(codec.encode)))
def test_mutated_encodings_raise_nothing_but_codec_errors(data: bytes) -> None:
    decodes_only_to_itself(data)


def test_message_ids_differ_with_content() -> None:
    ids = {codec.message_id(codec.encode(message)) for message in SAMPLES}
    assert len(ids) == len(SAMPLES)
    assert all(len(identifier) == 32 for identifier in ids)


# --- bare frames and votes ------------------------------------------------------------------


@given(value=st.one_of(bare_frames, certified_frames), tail=st.binary(max_size=3))
def test_bare_frames_round_trip_and_only_canonically(value: Frame, tail: bytes) -> None:
    data = codec.encode_frame(value)
    decoded = codec.decode_frame(data)
    assert decoded == value
    assert decoded.certificate == value.certificate
    assert codec.encode_frame(decoded) == data
    if tail:
        with pytest.raises(CodecError, match="not the canonical encoding"):
            codec.decode_frame(data + tail)


@given(value=votes)
def test_bare_votes_round_trip(value: Vote) -> None:
    data = codec.encode_vote(value)
    decoded = codec.decode_vote(data)
    assert decoded == value
    assert decoded.signature == value.signature
    assert codec.encode_vote(decoded) == data


@given(
    frame_data=mutated(st.one_of(bare_frames, certified_frames).map(codec.encode_frame)),
    vote_data=mutated(votes.map(codec.encode_vote)),
)
def test_mutated_bare_records_raise_nothing_but_codec_errors(
    frame_data: bytes, vote_data: bytes
) -> None:
    # Refused with a CodecError, or accepted only as the exact encoding of what was decoded.
    with contextlib.suppress(CodecError):
        assert codec.encode_frame(codec.decode_frame(frame_data)) == frame_data
    with contextlib.suppress(CodecError):
        assert codec.encode_vote(codec.decode_vote(vote_data)) == vote_data


def test_bare_encoders_refuse_malformed_records() -> None:
    with pytest.raises(CodecError, match=r"frame\.signature: expected 64 bytes, got 0"):
        codec.encode_frame(replace(frame(), signature=b""))
    with pytest.raises(CodecError, match=r"vote\.frame: expected 32 bytes, got 31"):
        codec.encode_vote(Vote(1, 0, b"f" * 31, b"p" * 32, b"v" * 32, b"s" * 64))
    with pytest.raises(CodecError, match="frame: expected 11 elements, got 3"):
        codec.decode_frame(codec.encode(codec.Proposal(frame())))


@pytest.mark.parametrize(
    ("batch", "reason"),
    [
        ([], "an empty batch"),
        ([b"x" * MAX_MUTATION_SIZE] * 48, f"more than {MAX_FRAME_MUTATION_BYTES} bytes"),
        ([b"x" * (MAX_MUTATION_SIZE + 1)], "mutation.mutations"),
        ([["x"]], "mutation.mutations"),
        (b"x", "mutation.mutations"),
    ],
)
def test_malformed_mutation_batches_are_rejected(batch: object, reason: str) -> None:
    with pytest.raises(CodecError, match=reason):
        codec.decode(raw(MessageKind.MUTATION, [batch]))
