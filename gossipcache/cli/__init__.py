"""The ``gossipcache`` command line: node, client commands, bench, trace-sim, keygen."""
