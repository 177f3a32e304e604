"""Counters and latency histograms of a node, and their Prometheus rendering (pure)."""
