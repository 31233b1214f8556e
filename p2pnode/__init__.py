"""p2pnode: a peer that runs a round-based BFT consensus engine over libp2p gossipsub."""

__version__ = "0.1.0"
