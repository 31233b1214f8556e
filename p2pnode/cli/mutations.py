"""Commands about mutations: submit one or a file of them (and wait), and where one is."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import trio

from p2pnode.api.client import ClientError, get_json, post_json, submit_batch
from p2pnode.api.server import MAX_SUBMIT_BATCH, MAX_SUBMIT_BODY
from p2pnode.chain.mempool import MAX_MUTATION_SIZE
from p2pnode.cli.commands import url_from
from p2pnode.cli.errors import UsageError

WAIT_FINAL = 120.0
"""How long `submit --wait` waits for its mutations to be final."""
POLL = 0.5
"""Seconds between asks of a peer while waiting: another process's state cannot be awaited."""
TAKEN = ("added", "duplicate")
LOST = ("expired", "displaced", "unknown")
"""Where a mutation waited for is no longer held by the peer asked (another peer it was
gossiped to may still get it into a frame)."""
ASK_EVERY = 5.0
"""While waiting, how often the peer is asked where the mutations not yet final are."""
ASKED = 16
"""At most this many of them each time (the rest are followed by frames only)."""
MUTATION_ID = re.compile(r"[0-9a-f]{64}")
WHERE = {
    "pending": "pending in the peer's mempool",
    "expired": "expired from the peer's mempool before a frame took it",
    "displaced": "displaced from the peer's full mempool by other origins' mutations",
    "unknown": "unknown to the peer (never submitted to it, or long gone)",
}
"""What `p2pnode mutation` says of each status but final."""

Result = dict[str, object]
"""One mutation's line of a submit: {"id", "admission"} and, once final, "rank"."""


def submit(args: argparse.Namespace) -> int:
    """Submit a mutation or every line of --file, in batches: a line per mutation (or
    --json), a summary for a file; with --wait, until each is final. Exits 1 if the peer
    refused any, or if --wait ran out."""
    if args.file is not None:
        mutations = read_mutations(args.file)
    else:
        mutations = [args.data.encode()]
        if not mutations[0] or len(mutations[0]) > MAX_MUTATION_SIZE:
            raise UsageError(f"a mutation is 1 to {MAX_MUTATION_SIZE} bytes")
    url = url_from(args)
    results, tip = trio.run(_submit, url, mutations)
    if not args.json:
        for result in results:
            print(f"mutation {result['id']} ({result['admission']})", flush=True)
        if args.file is not None:
            print(_summary(results))
    taken = [r for r in results if r["admission"] in TAKEN]
    late = trio.run(_wait_final, url, taken, tip, args.json) if args.wait and taken else []
    if args.json:
        print(json.dumps({"results": results, **_counts(results)}))
    if args.file is None and not taken:
        raise UsageError(f"the peer did not take the mutation: {results[0]['admission']}")
    if late:
        lost = [r for r in late if r.get("status") in LOST]
        why = f", {len(lost)} of them {'/'.join(sorted({str(r['status']) for r in lost}))}"
        raise UsageError(
            f"{len(late)} of {len(taken)} mutations not final"
            + (why if lost else f" after {WAIT_FINAL:.0f} s")
            + f" (p2pnode mutation {late[0]['id']} tells where it is)"
        )
    return 1 if len(taken) < len(results) else 0


def _counts(results: Sequence[Result]) -> dict[str, int]:
    admissions = [str(r["admission"]) for r in results]
    added, duplicate = admissions.count("added"), admissions.count("duplicate")
    return {"added": added, "duplicate": duplicate, "refused": len(results) - added - duplicate}


def _summary(results: Sequence[Result]) -> str:
    counts = _counts(results)
    refusals: dict[str, int] = {}
    for result in results:
        if result["admission"] not in TAKEN:
            refusals[str(result["admission"])] = refusals.get(str(result["admission"]), 0) + 1
    why = ", ".join(f"{count} {reason}" for reason, count in sorted(refusals.items()))
    return (
        f"{len(results)} mutations: {counts['added']} added, {counts['duplicate']} duplicate, "
        f"{counts['refused']} refused" + (f" ({why})" if why else "")
    )


def read_mutations(path: str) -> list[bytes]:
    """The mutations of a file (or stdin for -): its lines without their newline, empty ones
    skipped. A line over MAX_MUTATION_SIZE is a UsageError naming it."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    name = "stdin" if path == "-" else path
    mutations = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if len(line) > MAX_MUTATION_SIZE:
            raise UsageError(
                f"{name}: line {number} is {len(line)} bytes; a mutation is at most "
                f"{MAX_MUTATION_SIZE}; nothing was submitted"
            )
        if line:
            mutations.append(line)
    if not mutations:
        raise UsageError(f"{name} holds no mutation; nothing was submitted")
    return mutations


def batches(mutations: Sequence[bytes]) -> list[list[bytes]]:
    """The mutations in order, cut into batches of at most MAX_SUBMIT_BATCH mutations and
    MAX_SUBMIT_BODY bytes of CBOR each."""
    cut: list[list[bytes]] = []
    batch: list[bytes] = []
    size = _cbor_head_size(MAX_SUBMIT_BATCH)  # the array's head, at its largest
    for mutation in mutations:
        item = _cbor_head_size(len(mutation)) + len(mutation)
        if batch and (len(batch) == MAX_SUBMIT_BATCH or size + item > MAX_SUBMIT_BODY):
            cut.append(batch)
            batch, size = [], _cbor_head_size(MAX_SUBMIT_BATCH)
        batch.append(mutation)
        size += item
    if batch:
        cut.append(batch)
    return cut


def _cbor_head_size(length: int) -> int:
    """The bytes CBOR takes to say an array's or a byte string's length."""
    return 1 if length < 24 else 2 if length < 2**8 else 3 if length < 2**16 else 5


async def _submit(url: str, mutations: Sequence[bytes]) -> tuple[list[Result], int]:
    """Each mutation's id and admission, in order; and the tip before the first submit (a
    frame holding one of them is final above it)."""
    tip = _rank((await get_json(url, "/frames")).get("tip"))
    if len(mutations) == 1 and len(mutations[0]) <= MAX_MUTATION_SIZE:  # one: plain bytes
        reply = await post_json(url, "/submit", mutations[0])
        return [{"id": str(reply.get("id")), "admission": str(reply.get("admission"))}], tip
    results: list[Result] = []
    for batch in batches(mutations):
        try:
            reply = await submit_batch(url, batch)
        except ClientError as err:
            done = f"{len(results)} of {len(mutations)} submitted before"
            raise ClientError(f"{err} ({done})") from None
        answered = reply.get("results")
        if not isinstance(answered, list) or len(answered) != len(batch):
            raise ClientError(f"the peer did not answer a result per mutation: {reply}"[:200])
        for result in answered:
            known = result if isinstance(result, dict) else {}
            results.append({"id": str(known.get("id")), "admission": str(known.get("admission"))})
    return results, tip


def _rank(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


async def _wait_final(url: str, taken: Sequence[Result], tip: int, quiet: bool) -> list[Result]:
    """Wait until a final frame holds each mutation of `taken`, noting its rank in its
    result and printing a line for it unless `quiet`; those still not final after
    WAIT_FINAL. Frames are followed from `tip`; a duplicate may be final from before, so
    it is asked about on its own."""
    waiting = {str(r["id"]): r for r in taken}

    def final(mutation: str, rank: int) -> None:
        result = waiting.pop(mutation, None)
        if result is not None:
            result["rank"] = rank
            if not quiet:
                print(f"mutation {mutation} final in rank {rank}", flush=True)

    for result in [r for r in taken if r["admission"] == "duplicate"]:
        reply = await get_json(url, f"/mutation?id={result['id']}")
        if reply.get("status") == "final":
            final(str(result["id"]), _rank(reply.get("rank")))
    lost: list[Result] = []
    asked_at = trio.current_time()
    with trio.move_on_after(WAIT_FINAL):
        while waiting:
            reply = await get_json(url, f"/frames?from={tip + 1}")
            listed = reply.get("frames")
            for frame in listed if isinstance(listed, list) else []:
                for mutation in frame.get("mutations") or ():
                    final(str(mutation), _rank(frame.get("rank")))
                tip = max(tip, _rank(frame.get("rank")))
            if trio.current_time() - asked_at >= ASK_EVERY:
                asked_at = trio.current_time()
                lost += await _lost(url, waiting)
            if _rank(reply.get("tip")) <= tip:
                await trio.sleep(POLL)
    return lost + list(waiting.values())


async def _lost(url: str, waiting: dict[str, Result]) -> list[Result]:
    """Those of (the first ASKED of) `waiting` that the peer no longer holds: taken
    out of it, with their status noted."""
    lost = []
    for mutation in list(waiting)[:ASKED]:
        status = (await get_json(url, f"/mutation?id={mutation}")).get("status")
        if status in LOST:
            result = waiting.pop(mutation)
            result["status"] = str(status)
            lost.append(result)
    return lost


def mutation(args: argparse.Namespace) -> int:
    """Where a mutation is: final (rank and frame), pending, expired, displaced or unknown.
    Exits 0 if it is final or pending, 1 if the peer no longer holds it."""
    key = args.id.strip().lower()
    if not MUTATION_ID.fullmatch(key):
        raise UsageError(f"{args.id!r} is not a mutation id (64 hex digits, as submit prints)")
    reply = trio.run(get_json, url_from(args), f"/mutation?id={key}")
    status = str(reply.get("status"))
    if args.json:
        print(json.dumps({"id": key, **reply}))
    elif status == "final":
        print(f"mutation {key}: final in rank {reply.get('rank')}, frame {reply.get('frame')}")
    else:
        print(f"mutation {key}: {WHERE.get(status, status)}")
    return 0 if status in ("final", "pending") else 1
