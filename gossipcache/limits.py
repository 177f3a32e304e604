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

#: Largest |ttl_ms| accepted (about 8,900 years). Keeps ``now_ms + ttl_ms`` far inside int64 on
#: every node, whatever its clock says. Absolute expiry instants are bounded the same way.
TTL_MS_MAX = 2**48

#: Room in one frame around its key and value: msgpack headers, request id, op name, options.
FRAME_OVERHEAD_BYTES_MAX = 1024
#: Largest length-prefixed frame (version byte + body), client or peer: one key, one value and
#: their envelope.
FRAME_SIZE_BYTES_MAX = VALUE_SIZE_BYTES_MAX + KEY_SIZE_BYTES_MAX + FRAME_OVERHEAD_BYTES_MAX
