"""Wire formats: framing, the native protocol, RESP, peer streams (pure: bytes in, bytes out)."""
