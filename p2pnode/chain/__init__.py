"""The application: frames, votes, certificates, keys, proofs, messages, the engine's providers."""
