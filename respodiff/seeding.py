"""Stable per-item seeds.

Python's `hash` is salted per process, so it cannot name an image across runs; a digest of the item's identity
can, which makes an image independent of batch size, shard count and resume point.
"""

import hashlib

_SEED_MASK = 2**63 - 1


def stable_seed(*parts: object) -> int:
    """A non-negative 63-bit seed derived from the parts' string forms, joined by '|'."""
    key = "|".join(str(part) for part in parts).encode("utf-8")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") & _SEED_MASK
