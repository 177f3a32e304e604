"""Replication: coordinating reads and writes over a key's owners, serving as a replica, hints."""

from .codec import PAYLOAD_TAG
from .core import Replication, ReplicationConfig, ReplicationStats
from .hints import HintStore

__all__ = ["PAYLOAD_TAG", "HintStore", "Replication", "ReplicationConfig", "ReplicationStats"]
