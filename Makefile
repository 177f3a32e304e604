# Two set-up commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench-eviction bench-store bench-server bench-server-cost bench-membership \
	bench-memory-fill bench-memory-attacks bench-placement bench-cluster clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever pyproject.toml changes.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A local cluster of 3 node processes on 127.0.0.1 (native 7000-7002, RESP 6379-6381, metrics
# 9100-9102); it prints how to reach each node, and Ctrl-C stops all of them. Other ports or
# sizes: ARGS="--base-port 17000 --resp-base-port 16379 --metrics-base-port 19100".
run: $(STAMP)
	$(BIN)/gossipcache cluster --nodes 3 --max-memory 256MiB --eviction sieve $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check gossipcache sim tests examples benchmarks
	$(BIN)/ruff format --check gossipcache sim tests examples benchmarks

# Benchmarks (docs/benchmarks.md): each rewrites its raw report or prints its table.
bench-eviction: $(STAMP)
	$(BIN)/python -m benchmarks.eviction_bench --out docs/eviction-results.md

bench-store: $(STAMP)
	$(BIN)/python -m benchmarks.store_bench --entries 1000000

# Needs redis-server and redis-benchmark (apt-get install redis-server redis-tools).
bench-server: $(STAMP)
	$(BIN)/python -m benchmarks.compare --rounds 3 --out docs/server-results.md

# Instructions per operation of the node (and of BASELINE's node, and Redis) under callgrind;
# needs valgrind too. BASELINE: the revision to compare with (main before the hardening issue).
BASELINE ?= f4559dc
bench-server-cost: $(STAMP)
	$(BIN)/python -m benchmarks.server_cost --baseline $(BASELINE)

bench-membership: $(STAMP)
	$(BIN)/python -m sim bench membership

# Resident memory of real nodes filled past --max-memory, against the sizing rule (~6-10 min;
# pick a subset with ARGS, e.g. ARGS="--limits 64MiB --policies lru,s3fifo --mixes small").
bench-memory-fill: $(STAMP)
	$(BIN)/python -m benchmarks.memory_fill $(ARGS)

# Issue 8's memory attacks against real node processes: peak RSS against the budgets (~1.5 min;
# one attack with ARGS="--only reply-resp").
bench-memory-attacks: $(STAMP)
	$(BIN)/python -m benchmarks.memory_attacks $(ARGS)

# Placement balance, movement on join/leave, build times and table memory (~30 s).
bench-placement: $(STAMP)
	$(BIN)/python -m benchmarks.placement_bench $(ARGS)

# Issue 9: server CPU per operation of 3-node clusters (one hop and forwarded, one and quorum)
# against one node and Redis, in one run (~6 min; needs redis-server), then the simulator's
# node-to-node messages and bytes per operation (3 and 5 nodes).
bench-cluster: $(STAMP)
	$(BIN)/python -m benchmarks.cluster_bench --rounds 3 --out docs/cluster-results.md $(ARGS)
	$(BIN)/python -m sim bench replication-cost --nodes 3
	$(BIN)/python -m sim bench replication-cost --nodes 5

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
