"""The libp2p adapter: moves bytes between peers and asks a judge about every message."""

from p2pnode.net.contracts import (
    GENESIS_PROTOCOL,
    MAX_PAYLOAD,
    Judge,
    MeshDegrees,
    NetConfig,
    NetError,
    SyncServer,
    Topic,
    Verdict,
    mesh_degrees,
    sync_protocol,
    topic_name,
)
from p2pnode.net.discovery import PeerRecord, decode_record, encode_record
from p2pnode.net.network import Network, open_network
from p2pnode.net.sync import fetch_genesis

__all__ = [
    "GENESIS_PROTOCOL",
    "MAX_PAYLOAD",
    "Judge",
    "MeshDegrees",
    "NetConfig",
    "NetError",
    "Network",
    "PeerRecord",
    "SyncServer",
    "Topic",
    "Verdict",
    "decode_record",
    "encode_record",
    "fetch_genesis",
    "mesh_degrees",
    "open_network",
    "sync_protocol",
    "topic_name",
]
