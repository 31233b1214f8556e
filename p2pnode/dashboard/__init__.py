"""The live dashboard of one peer or a whole testnet, polled over the status endpoint."""

from p2pnode.dashboard.live import fetch, watch
from p2pnode.dashboard.model import Reading, Unreachable
from p2pnode.dashboard.render import peer_view, testnet_view

__all__ = ["Reading", "Unreachable", "fetch", "peer_view", "testnet_view", "watch"]
