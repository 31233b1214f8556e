"""The mempool shared between origins: quotas, fair eviction, local priority and expiry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.chain.mempool import (
    CAPACITY,
    ENTRY_COST,
    EXPIRY_MS,
    LOCAL,
    LOOKAHEAD,
    MAX_MUTATION_SIZE,
    STRANGER_BURST,
    STRANGER_BYTES_PER_S,
    STRANGER_SHARE,
    Admission,
    Fate,
    Mempool,
    mutation_bytes,
    mutation_id,
)

FLOODER, HONEST, THIRD = "12D3KooWFlooder", "12D3KooWHonest", "12D3KooWThird"


@dataclass
class Clock:
    now: int = 0

    def __call__(self) -> int:
        return self.now


def items(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(count)]


def test_the_defaults_bound_memory_and_leave_room_for_eight_origins() -> None:
    pool = Mempool()
    assert (CAPACITY, EXPIRY_MS) == (10_000, 300_000)
    for item in items("f", CAPACITY // 8):
        assert pool.add(item, FLOODER) is Admission.ADDED
    assert pool.add(b"one more", FLOODER) is Admission.OVER_QUOTA
    assert pool.held_by(FLOODER) == len(pool) == 1_250


def test_a_flooding_origin_is_held_to_its_quota() -> None:
    pool = Mempool(capacity=8, quota=3)
    flood = items("flood", 10)
    assert [pool.add(item, FLOODER) for item in flood] == [Admission.ADDED] * 3 + [
        Admission.OVER_QUOTA
    ] * 7
    assert pool.add(b"honest", HONEST) is Admission.ADDED
    assert pool.add(b"mine", LOCAL) is Admission.ADDED
    assert pool.held_by(FLOODER) == 3
    assert pool.take() == (b"mine", *flood[:3], b"honest"), "local submits are taken first"


def test_a_full_pool_takes_from_the_largest_holder_until_shares_are_even() -> None:
    pool = Mempool(capacity=4, quota=3)
    flood = items("flood", 3)
    for item in flood:
        pool.add(item, FLOODER)
    assert pool.add(b"h1", HONEST) is Admission.ADDED  # now full
    assert pool.add(b"t1", THIRD) is Admission.ADDED  # displaces the flooder's oldest
    assert pool.add(b"h2", HONEST) is Admission.ADDED  # flooder 2 > honest 1: its next oldest
    assert pool.take() == (flood[2], b"h1", b"t1", b"h2")
    assert pool.add(b"t2", THIRD) is Admission.ADDED  # honest 2 > third 1: honest's oldest
    assert pool.take() == (flood[2], b"t1", b"h2", b"t2")
    assert pool.add(b"f3", FLOODER) is Admission.ADDED  # third 2 > flooder 1: third's oldest
    assert pool.take() == (flood[2], b"h2", b"t2", b"f3")
    assert [pool.held_by(o) for o in (FLOODER, HONEST, THIRD)] == [2, 1, 1]


def test_many_origins_of_one_entry_each_still_let_a_newcomer_in() -> None:
    pool = Mempool(capacity=4, quota=2)
    for n in range(4):
        assert pool.add(f"sybil-{n}".encode(), f"sybil{n}") is Admission.ADDED
    assert pool.add(b"honest", HONEST) is Admission.ADDED  # 1 > 0: the oldest sybil's goes
    assert pool.add(b"sybil-4", "sybil1") is Admission.FULL  # 1 = 1: equals do not trade
    assert pool.take() == (b"sybil-1", b"sybil-2", b"sybil-3", b"honest")


def test_a_local_submit_displaces_gossip_and_never_the_reverse() -> None:
    pool = Mempool(capacity=3, quota=2)
    pool.add(b"f1", FLOODER)
    pool.add(b"f2", FLOODER)
    pool.add(b"h1", HONEST)
    assert pool.add(b"mine-1", LOCAL) is Admission.ADDED  # the flooder holds the most
    assert pool.add(b"mine-2", LOCAL) is Admission.ADDED  # 1 and 1: the oldest goes
    assert pool.take() == (b"mine-1", b"mine-2", b"h1")
    assert pool.add(b"mine-3", LOCAL) is Admission.ADDED
    assert pool.take() == (b"mine-1", b"mine-2", b"mine-3")
    assert pool.add(b"mine-4", LOCAL) is Admission.FULL  # local never displaces local
    assert pool.add(b"f3", FLOODER) is Admission.FULL
    assert pool.add(b"h2", HONEST) is Admission.FULL
    assert pool.held_by(LOCAL) == 3


def test_a_local_submit_of_a_gossiped_mutation_makes_it_local() -> None:
    pool = Mempool(capacity=2, quota=2)
    pool.add(b"shared", FLOODER)
    pool.add(b"f2", FLOODER)
    assert pool.add(b"shared", LOCAL) is Admission.DUPLICATE
    assert (pool.held_by(LOCAL), pool.held_by(FLOODER)) == (1, 1)
    assert pool.add(b"h1", HONEST) is Admission.ADDED  # displaces f2, not the adopted entry
    assert pool.take() == (b"shared", b"h1")  # which kept its place in the queue


def test_a_mutation_s_fate_is_told_until_it_is_final_or_forgotten() -> None:
    clock = Clock()
    pool = Mempool(capacity=2, quota=2, remembered=2, expiry_ms=1_000, clock=clock)
    key = mutation_id
    assert pool.fate(key(b"mine")) is Fate.UNKNOWN
    pool.add(b"mine", LOCAL)
    pool.add(b"gossip", FLOODER)
    assert pool.fate(key(b"mine")) is Fate.PENDING
    assert pool.add(b"local", LOCAL) is Admission.ADDED  # full: the gossip entry makes room
    assert pool.fate(key(b"gossip")) is Fate.DISPLACED
    clock.now = 1_000
    pool.expire()
    assert pool.fate(key(b"mine")) is Fate.EXPIRED
    pool.add(b"mine", LOCAL)  # submitted again: pending again, then final
    assert pool.fate(key(b"mine")) is Fate.PENDING
    pool.finalized([b"mine"])
    assert pool.fate(key(b"mine")) is Fate.UNKNOWN  # the store tells a final one
    for n in range(3):
        pool.add(f"x{n}".encode(), LOCAL)
        pool.finalized([f"x{n}".encode()])
        clock.now += 1_000
        pool.add(f"y{n}".encode(), LOCAL)
        clock.now += 1_000
        pool.expire()
    assert pool.fate(key(b"y2")) is Fate.EXPIRED
    assert pool.fate(key(b"gossip")) is Fate.UNKNOWN, "only the last `remembered` are told"


def test_a_frame_skips_what_sync_finalized_and_asks_the_store_once() -> None:
    """Mutations that became final in frames this peer only synced stay pending until a frame
    is collected: it leaves them out and fills their room with the next. It asks the store
    about its candidates in one call, not one call each (460 queries a round under load),
    and, should some be final, about the whole pool once: never more than twice, however the
    final ones lie (asking again for each pass recursed past Python's limit)."""
    final: set[bytes] = set()
    asked: list[list[bytes]] = []

    def final_among(ids: Sequence[bytes]) -> set[bytes]:
        asked.append(list(ids))
        return final & set(ids)

    pool = Mempool(final_among=final_among)
    pending = items("m", 3000)
    for item in pending:
        pool.add(item)
    asked.clear()
    final.update(mutation_id(item) for item in pending[:2998])  # a sync stored them meanwhile
    room = mutation_bytes(pending[:4])
    assert pool.take(room) == tuple(pending[2998:])
    assert [len(ids) for ids in asked] == [4, 3000]
    assert pool.fate(mutation_id(pending[0])) is Fate.UNKNOWN
    assert len(pool) == 2
    asked.clear()
    assert pool.take(room) == tuple(pending[2998:])
    assert [len(ids) for ids in asked] == [2]


def test_entries_expire() -> None:
    clock = Clock()
    pool = Mempool(capacity=4, quota=2, expiry_ms=1_000, clock=clock)
    pool.add(b"old", FLOODER)
    clock.now = 400
    pool.add(b"newer", FLOODER)
    pool.add(b"mine", LOCAL)
    assert pool.add(b"again", FLOODER) is Admission.OVER_QUOTA
    clock.now = 999
    assert pool.take() == (b"mine", b"old", b"newer")
    clock.now = 1_000
    assert pool.take() == (b"mine", b"newer")
    assert pool.add(b"again", FLOODER) is Admission.ADDED  # its quota freed
    assert pool.add(b"old", FLOODER) is Admission.OVER_QUOTA  # not a duplicate: it left
    clock.now = 1_400
    pool.expire()
    assert (len(pool), pool.take()) == (1, (b"again",))
    assert pool.add(b"old", FLOODER) is Admission.ADDED


def _trusting(*origins: str) -> Callable[[str], bool]:
    return lambda origin: origin in origins


def test_made_up_origins_share_the_strangers_quarter_however_many_they_are() -> None:
    pool = Mempool(capacity=8, quota=4, trusted=_trusting(HONEST, THIRD))
    for n in range(1000):
        pool.add(f"s{n}".encode(), f"sybil{n}")
        assert len(pool) <= 8 // STRANGER_SHARE
    assert pool.add(b"h1", HONEST) is Admission.ADDED
    assert pool.add(b"mine", LOCAL) is Admission.ADDED
    # One lane, the newest displacing the oldest: 1,000 names held two places.
    assert pool.take() == (b"mine", b"h1", b"s998", b"s999"), "local, trusted, then strangers"
    assert pool.add(b"s1000", "sybil998") is Admission.ADDED
    assert pool.take() == (b"mine", b"h1", b"s999", b"s1000")


def test_a_trusted_origin_displaces_a_stranger_first_and_a_stranger_never_a_trusted() -> None:
    pool = Mempool(capacity=4, quota=4, trusted=_trusting(HONEST))
    for item in items("h", 3):
        pool.add(item, HONEST)
    assert pool.add(b"s0", FLOODER) is Admission.ADDED  # now full
    assert pool.add(b"h3", HONEST) is Admission.ADDED, "the stranger's entry goes, not ours"
    assert pool.take() == (*items("h", 3), b"h3")
    assert pool.add(b"s1", FLOODER) is Admission.FULL, "a stranger takes nothing from trust"


def test_strangers_bring_at_most_their_byte_rate() -> None:
    clock = Clock()
    pool = Mempool(trusted=_trusting(HONEST), clock=clock)
    big = [n.to_bytes(2, "big") * (MAX_MUTATION_SIZE // 2) for n in range(200)]
    admitted = [pool.add(m, f"sybil{n}") for n, m in enumerate(big)]
    fits = STRANGER_BURST // (MAX_MUTATION_SIZE + ENTRY_COST)
    assert admitted == [Admission.ADDED] * fits + [Admission.OVER_BUDGET] * (200 - fits)
    assert pool.add(b"trusted, whatever the rate", HONEST) is Admission.ADDED
    clock.now = 1_000  # a second: STRANGER_BYTES_PER_S more
    later = [bytes([n]) * MAX_MUTATION_SIZE for n in range(1, 20)]
    again = [pool.add(m, f"late{n}") for n, m in enumerate(later)]
    assert again.count(Admission.ADDED) == STRANGER_BYTES_PER_S // (MAX_MUTATION_SIZE + ENTRY_COST)


def test_strangers_pay_for_each_entry_not_only_its_bytes() -> None:
    clock = Clock()
    pool = Mempool(trusted=_trusting(HONEST), clock=clock)
    admitted = [pool.add(b"%03d" % (n % 1000), f"sybil{n}") for n in range(2000)]
    assert admitted.count(Admission.ADDED) == STRANGER_BURST // (3 + ENTRY_COST)


def test_mutations_final_long_ago_cost_a_lookup_per_lookahead() -> None:
    """A batch may hold 12,000 tiny mutations final long ago (out of the remembered ones), or one
    of them 12,000 times: the store is asked about LOOKAHEAD at a time, a repeat not again."""
    old = items("old", 3 * LOOKAHEAD)
    asked: list[int] = []

    def final_among(ids: Sequence[bytes]) -> set[bytes]:
        asked.append(len(ids))
        return {key for key in ids if key in {mutation_id(m) for m in old}}

    clock = Clock()
    pool = Mempool(final_among=final_among, trusted=_trusting(HONEST), clock=clock)
    assert set(pool.add_many(old, HONEST)) == {Admission.DUPLICATE}
    assert asked == [LOOKAHEAD] * 3
    asked.clear()
    assert set(pool.add_many([old[0]] * 12_000, HONEST)) == {Admission.DUPLICATE}
    assert len(asked) == 1


# --- the invariants, whatever arrives ---------------------------------------------------------

ORIGINS = (LOCAL, FLOODER, HONEST, THIRD, "sybil-a", "sybil-b")
TRUSTED = {FLOODER, HONEST}
Step = tuple[str, int, int]
"""(what, origin index or finalized count, mutation number or milliseconds)"""

steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(0, len(ORIGINS) - 1), st.integers(0, 40)),
        st.tuples(st.just("tick"), st.just(0), st.integers(0, 400)),
        st.tuples(st.just("final"), st.integers(1, 3), st.just(0)),
    ),
    max_size=120,
)


@given(steps, st.integers(1, 8), st.integers(1, 4))
def test_capacity_quota_shares_and_priorities_hold(
    script: list[Step], capacity: int, quota: int
) -> None:
    clock = Clock()
    pool = Mempool(
        capacity=capacity,
        quota=quota,
        expiry_ms=1_000,
        clock=clock,
        trusted=lambda origin: origin in TRUSTED,
    )
    for what, which, value in script:
        if what == "tick":
            clock.now += value
        elif what == "final":
            pool.finalized(pool.take(which))
        else:
            pool.expire()  # what leaves by age leaves here, not in the add checked below
            origin, data = ORIGINS[which], f"m{value}".encode()
            local, trusted = _held(pool, {LOCAL}), _held(pool, TRUSTED | {LOCAL})
            pool.add(data, origin)
            assert local <= _held(pool, {LOCAL}), "an add displaced a local entry"
            if origin not in TRUSTED | {LOCAL}:
                assert trusted <= _held(pool, TRUSTED | {LOCAL}), "a stranger displaced trust"
        assert len(pool) <= capacity
        assert all(pool.held_by(o) <= quota for o in ORIGINS if o != LOCAL)
        assert sum(pool.held_by(o) for o in ORIGINS) == len(pool)
        strangers = sum(pool.held_by(o) for o in ORIGINS if o not in TRUSTED | {LOCAL})
        assert strangers <= max(1, capacity // STRANGER_SHARE)


def _held(pool: Mempool, origins: set[str]) -> set[bytes]:
    """The pending mutations held by `origins` (as the pool's entries say)."""
    return {key for key, entry in pool._pending.items() if entry.origin in origins}
