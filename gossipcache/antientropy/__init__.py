"""Anti-entropy (issue 10): replicas compare per-bucket summaries and repair what differs."""
