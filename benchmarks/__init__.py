"""Development-only benchmarks: run from the checkout (``python -m benchmarks.compare``); not shipped."""
