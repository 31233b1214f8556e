"""The application: frames, votes, certificates, keys, proofs and the providers of the engine."""
