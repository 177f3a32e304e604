"""The Python clients: ``Client`` (Trio) and ``SyncClient`` (blocking)."""
