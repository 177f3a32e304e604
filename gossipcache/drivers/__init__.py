"""Drivers: the Trio code that moves bytes and time between sockets and the node core."""
