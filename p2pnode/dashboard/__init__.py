"""The live dashboard of one peer or a whole testnet, polled over the status endpoint."""

from p2pnode.dashboard.live import fetch, watch
from p2pnode.dashboard.model import PeerStatus, Reading, Unreachable, parse_status
from p2pnode.dashboard.render import peer_view, testnet_view

__all__ = [
    "PeerStatus",
    "Reading",
    "Unreachable",
    "fetch",
    "parse_status",
    "peer_view",
    "testnet_view",
    "watch",
]
