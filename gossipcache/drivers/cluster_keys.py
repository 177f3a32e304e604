"""Cluster keys: the shared secrets that authenticate every membership packet and every peer
stream's handshake.

A key file holds one hex key per line; the first is the primary (it signs), all of them verify,
so a key rotates in three steps across the cluster: add the new key second everywhere, make it
first everywhere, remove the old one. Blank lines and ``#`` comments are ignored.
"""

from __future__ import annotations

import hashlib
import logging

from ..membership import Keyring

log = logging.getLogger("gossipcache.cluster_keys")

#: The cluster key used when no key file is configured. Public, so it authenticates nothing:
#: for development on one machine only (the node logs a warning when it uses it).
DEVELOPMENT_CLUSTER_KEY = b"gossipcache development key, not secret!"
#: Keys one cluster key file may hold (current, next, previous is the usual rotation).
CLUSTER_KEYS_MAX = 16


def parse_cluster_keys(text: str) -> list[bytes]:
    """Keys of a cluster key file: one hex key per line, the first is primary; blank lines and
    ``#`` comments are ignored. Raises ValueError for anything else."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            keys.append(bytes.fromhex(line))
        except ValueError:
            raise ValueError(f"cluster key file line {number}: not a hex key") from None
    if not keys:
        raise ValueError("cluster key file holds no key")
    if len(keys) > CLUSTER_KEYS_MAX:
        raise ValueError(f"cluster key file holds more than {CLUSTER_KEYS_MAX} keys")
    return keys


def cluster_keyring(keys: list[bytes]) -> Keyring:
    """A keyring holding ``keys`` (first = primary). A key's id is derived from the key itself
    (first byte of its SHA-256), so nodes agree on ids whatever order their files list keys in."""
    ids = [hashlib.sha256(key).digest()[0] for key in keys]
    if len(set(ids)) != len(ids):
        raise ValueError("two cluster keys share a key id; generate another key")
    keyring = Keyring(keys[0], ids[0])
    for key_id, key in zip(ids[1:], keys[1:]):
        keyring.add_key(key_id, key)
    return keyring


def load_cluster_keys(path: str | None) -> list[bytes]:
    """The keys of the key file at ``path`` (first = primary), or the development key when
    ``path`` is None. Raises OSError / ValueError for an unreadable or malformed file. The
    membership keyring and the peer stream handshake (``wire.peer.PeerAuthenticator``) are both
    built from this one list."""
    if path is None:
        log.warning(
            "no --cluster-key-file: membership and peer streams use the public development key; "
            "anyone who can reach this node's port can join or disrupt the cluster"
        )
        return [DEVELOPMENT_CLUSTER_KEY]
    with open(path, encoding="ascii") as file:
        return parse_cluster_keys(file.read())


def load_cluster_keyring(path: str | None) -> Keyring:
    """The keyring from the key file at ``path``, or the development key when ``path`` is None.
    Raises OSError / ValueError for an unreadable or malformed file."""
    return cluster_keyring(load_cluster_keys(path))
