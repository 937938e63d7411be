"""Secure aggregation with CKKS (TenSEAL): the aggregator never holds a secret key.

``params`` (presets, 128-bit bound) → ``keys`` (key authority, who gets which
context) → ``packing`` (pure: chunk, encrypt, sum, decrypt) → ``ciphertexts``
(labelled payloads, integrity checks) → ``roles`` (aggregator, decryptor) →
``stage`` (the participants' encrypt stage) → ``session`` (the Ray edge used by
the round loop). Threat model: ``docs/security.md``.
"""
