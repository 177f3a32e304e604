"""Independent, reproducible random streams derived from one root seed.

Every source of randomness in a simulation (the network, the fault injector, each node) draws
from its own ``random.Random``. A stream's seed is a SHA-256 of the root seed and the stream's
name, so adding a node or a draw in one stream never shifts another stream, and the result does
not depend on ``PYTHONHASHSEED`` (Python's ``hash()`` of a string does).
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(root_seed: int, stream_name: str) -> int:
    """A 64-bit seed for the stream ``stream_name`` under ``root_seed``."""
    material = f"{root_seed}/{stream_name}".encode()
    return int.from_bytes(hashlib.sha256(material).digest()[:8], "big")


def derive_rng(root_seed: int, stream_name: str) -> random.Random:
    """A ``random.Random`` for the stream ``stream_name`` under ``root_seed``."""
    return random.Random(derive_seed(root_seed, stream_name))
