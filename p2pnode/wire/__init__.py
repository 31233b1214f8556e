"""The wire format: p2pnode's messages as canonical CBOR, strictly decoded."""
