"""The node core: commands, configuration and protocol sessions (sans-IO)."""
