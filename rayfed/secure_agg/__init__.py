"""Secure aggregation with CKKS (TenSEAL): only the decryptor holds a secret key.

``params`` (presets, 128-bit bound) → ``keys`` (key authority; everyone but the
decryptor gets the public context) → ``packing`` (pure: chunk, encrypt, parse,
sum, decrypt) → ``signing`` (participants' Ed25519 signatures on labels, the
decryptor's key registry) → ``ciphertexts`` (labelled, signed payloads and their
checks) → ``roles`` (aggregator screens, decryptor verifies, sums and opens) →
``stage`` (the participants' encrypt stage) → ``session`` (the Ray edge used by
the round loop). Threat model and attacks: ``docs/security.md``.
"""
