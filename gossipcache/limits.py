"""Every size and range cap a request must respect, in one place.

The store refuses keys and values above its caps, the wire decoders refuse frames and bulk
strings that could not hold a legal request, and the command layer refuses TTLs outside the
range below. They all read these numbers, so raising one cap cannot leave another behind.
"""

from __future__ import annotations

#: Longest key. Keys are identifiers; bounded so one request cannot monopolise the loop.
KEY_SIZE_BYTES_MAX = 64 * 1024
#: Longest value. Values are payloads; a node may be configured lower, never higher.
VALUE_SIZE_BYTES_MAX = 16 * 1024 * 1024

#: Largest |ttl_ms| a request may carry (about 8,900 years): a range the wire codecs check without
#: a clock. What an entry keeps is its absolute expiry, bounded below.
TTL_MS_MAX = 2**48
#: Latest absolute expiry an entry may have, in wall-clock ms since the Unix epoch (the year
#: 10889): it fits the 48-bit expiry fields replication carries. A relative TTL is accepted when
#: ``now_ms + ttl_ms`` stays within it; a later expiry is refused, never clamped. Redis accepts
#: anything up to int64 overflow (docs/protocol.md lists the difference).
EXPIRES_AT_MS_MAX = 2**48 - 1

#: Most keys one command may name (DEL, EXISTS). A command runs to completion on the node's one
#: loop and its work grows with its keys: this bounds the longest (docs/design.md, "Bounded work
#: per command"). Redis has no such cap.
KEYS_PER_COMMAND_MAX = 8192
#: Most arguments of one RESP command, its name included: the keys above plus the name. Every
#: command that loops over its arguments (SET and EXPIRE options, INFO sections, CONFIG GET
#: patterns, HELLO options) is bounded by it.
ARGS_PER_COMMAND_MAX = KEYS_PER_COMMAND_MAX + 1
#: Most bytes of glob patterns one CONFIG GET may carry, in all. The matcher's work is linear in
#: them; without a cap a 1 MB pattern froze a node for 12.9 s. Redis has no such cap.
CONFIG_PATTERNS_SIZE_BYTES_MAX = 4096

#: Room in one frame around its key and value: msgpack headers, request id, op name, options.
FRAME_OVERHEAD_BYTES_MAX = 1024
#: Largest length-prefixed frame (version byte + body), client or peer: one key, one value and
#: their envelope.
FRAME_SIZE_BYTES_MAX = VALUE_SIZE_BYTES_MAX + KEY_SIZE_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX

#: Most members one placement table ranks. Building a table costs 16384 x members hashes (about
#: 0.5 s at 100 members, done in slices), so the cap bounds that work and the table's memory.
PLACEMENT_MEMBERS_MAX = 1024
#: Most replicas of a key (R). Each bucket keeps R owners.
PLACEMENT_REPLICAS_MAX = 8
#: Longest node id, host id or zone name in a placement member, UTF-8 encoded.
PLACEMENT_NAME_SIZE_BYTES_MAX = 255
#: Range of a placement member's weight (any capacity unit, e.g. bytes): keeps every weighted
#: score finite and non-zero, so rankings never tie on infinities or zeros.
PLACEMENT_WEIGHT_MIN = 2.0**-20
PLACEMENT_WEIGHT_MAX = 2.0**64
