# Everything a fresh machine needs is set up by these targets; no other step.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
TEST_EXTRAS := demo,dev,aws,openstack

.PHONY: demo test lint bench chaos clean system-deps install warm-tests

# uv resolves and downloads in parallel: the install takes well under a minute instead of ~2.5 with
# pip. --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set, each of the suite's
# hundreds of processes would otherwise compile aiohttp, pydantic & co. again (+90 s on the suite).
# Should uv be unusable (no wheel for the platform), pip installs the same set.
# $(call install,EXTRAS): the package, editable, with those extras.
define install
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	{ $(BIN)/python -m pip install -q --disable-pip-version-check uv && \
	  $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[$(1)]'; } || \
	  $(BIN)/python -m pip install -q -e '.[$(1)]'
endef

# The demo needs pitrix and the simulator only: not the test tools, linters or other clouds' SDKs
# (those were ~4 of a fresh `make demo`'s ~4.5 minutes; docs/benchmarks.md, "Set-up").
$(DEMO_STAMP): pyproject.toml
	$(call install,demo)
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml
	$(call install,$(TEST_EXTRAS))
	touch $(DEMO_STAMP) $(STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/pitrix demo

# Three workers on two cores: much of the end-to-end tests' time is spent waiting (etcd elections,
# health intervals, heartbeats, VMs booting), and every test has its own loopback network, ports and
# etcd prefix. Measured on the whole suite on 2 cores: 900 s with two workers, 776 s with three (no
# test failed; four made three timing-sensitive tests fail). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 3

# The suite starts hundreds of Python processes (CLI, pitrixd, agents, simulators): compile the
# checkout first, so each loads bytecode even where PYTHONDONTWRITEBYTECODE is set (as on our machines).
# The Debian packages install and the tests' bytecode is cached while ruff and mypy run (one waits
# on the network, the others on a core).
test: $(STAMP)
	$(MAKE) --no-print-directory -j3 system-deps lint warm-tests
	$(BIN)/pytest -q -ra -n $(TEST_WORKERS) --dist worksteal

# pytest rewrites the asserts of every test module in each worker, and where PYTHONDONTWRITEBYTECODE
# is set it keeps none of that work: 11 of the 21 CPU-seconds a worker spends collecting the suite.
# One collection with bytecode writing on leaves the rewritten modules (and the compiled checkout)
# in __pycache__, which the workers then read even with the variable set.
warm-tests: $(STAMP)
	$(BIN)/python -m compileall -q pitrix simulator bench tests > /dev/null
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -q -p no:xdist -p no:cacheprovider --collect-only > /dev/null

# Debian packages a few tests need (etcd 3.4, systemd-analyze, Chromium): installed when run as root.
system-deps:
	@bash scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

# The reliability suite, long form (its short form runs inside `make test`), and the long form over
# every cloud face of the simulator (demo, etcd example, crash test on qingcloud, openstack, aws).
chaos: $(STAMP)
	CHAOS_LONG=1 $(BIN)/pytest -q -ra -s -m chaos tests/chaos tests/e2e/test_faces_long.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

# pitrix as systemd services on this machine (as root): users, directories, a virtualenv at
# PREFIX with pitrix from this checkout, the units (docs/config.md, "systemd"). ROOT= installs into an image.
PREFIX ?= /opt/pitrix
ROOT   ?= /
install:
	scripts/install --root $(ROOT) --prefix $(PREFIX) --python $(PYTHON)
