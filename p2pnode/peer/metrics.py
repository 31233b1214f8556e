"""Prometheus metrics of a peer, read from its status when scraped; every name p2pnode_…,
beside the process metrics Prometheus' clients all export (process_…, python_…)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from p2pnode.consensus import State
from p2pnode.peer.build import VERSION, commit
from p2pnode.peer.health import health_problems
from p2pnode.peer.status import PeerStatus

PREFIX = "p2pnode_"

ROUND_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class StatusCollector(Collector):
    """Turns a status snapshot into metric families at every scrape."""

    def __init__(self, status: Callable[[], PeerStatus]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        yield InfoMetricFamily(
            f"{PREFIX}build",
            "The p2pnode that runs",
            value={"version": VERSION, "commit": commit()},
        )
        yield InfoMetricFamily(
            f"{PREFIX}peer",
            "Who answers: the peer's id, name and network",
            value={"peer_id": status.peer_id, "name": status.name, "network": status.network},
        )
        yield GaugeMetricFamily(
            f"{PREFIX}healthy",
            "1 when connected to a quorum and finalizing (see /health), else 0",
            value=0.0 if health_problems(status) else 1.0,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}consensus_rank", "Latest final rank", value=status.finalized_rank
        )
        if status.since_finalized is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}consensus_since_final_seconds",
                "Seconds since this peer last saw a frame become final",
                value=status.since_finalized,
            )
        yield GaugeMetricFamily(
            f"{PREFIX}consensus_attempt",
            "Attempt of the rank being decided",
            value=status.round.attempt,
        )
        state = GaugeMetricFamily(
            f"{PREFIX}consensus_state", "Engine state (1 = current)", labels=["state"]
        )
        for name in State:
            state.add_metric([name.value], 1.0 if name.value == status.state else 0.0)
        yield state
        yield GaugeMetricFamily(
            f"{PREFIX}consensus_state_seconds",
            "Seconds in the current state",
            value=status.state_time,
        )
        yield GaugeMetricFamily(f"{PREFIX}p2p_peers", "Connected peers", value=len(status.peers))
        mesh = GaugeMetricFamily(
            f"{PREFIX}p2p_mesh_peers", "Gossip mesh size per topic", labels=["topic"]
        )
        for topic, size in sorted(status.mesh):
            mesh.add_metric([topic], size)
        yield mesh
        messages = CounterMetricFamily(
            f"{PREFIX}p2p_messages",
            "Gossip messages by topic and verdict",
            labels=["topic", "verdict"],
        )
        for row in status.counters:
            for verdict, count in (
                ("accept", row.accept),
                ("ignore", row.ignore),
                ("reject", row.reject),
            ):
                messages.add_metric([row.topic, verdict], count)
        yield messages
        yield GaugeMetricFamily(
            f"{PREFIX}mempool_mutations", "Pending mutations", value=status.mempool
        )
        for family_name, text, rows in (
            (
                f"{PREFIX}p2p_dropped",
                "Messages and RPCs dropped before judging, by reason",
                status.malformed,
            ),
            (
                f"{PREFIX}p2p_limited",
                "What budgets, bans and tiers turned away, by reason",
                status.limited,
            ),
        ):
            family = CounterMetricFamily(family_name, text, labels=["reason"])
            for reason, count in rows:
                family.add_metric([reason], count)
            yield family


class Metrics:
    """A peer's registry (its own: nothing in prometheus_client's global one): its status
    collector, the round-duration histogram and the process, platform and GC collectors."""

    def __init__(self, status: Callable[[], PeerStatus]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(StatusCollector(status))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.round_duration = Histogram(
            f"{PREFIX}consensus_round_duration_seconds",
            "Seconds from one final frame to the next",
            buckets=ROUND_BUCKETS,
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
