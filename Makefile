# Two entry points for a fresh machine: `make demo` and `make test`.
# Everything they need (Debian packages, Python packages, a throw-away PostgreSQL)
# is installed and started here, never by hand.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The demo has its own small environment (the package and the demo's SMTP sink, about 16
# packages) so that `make demo` on a fresh clone serves quickly; `make test` keeps .venv.
DEMO_VENV := .venv-demo
DEMO_BIN := $(DEMO_VENV)/bin
PGBIN ?= /usr/lib/postgresql/15/bin
PGRUN := $(if $(filter 0,$(shell id -u)),runuser -u postgres --,)
PGDIR ?= /tmp/pgtest-$(notdir $(CURDIR))-$(shell id -u)
APT_PACKAGES := postgresql chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test sysdeps venv lint type docs bench mutate clean pg-up pg-down

# uv (from PyPI, one wheel) installs the ~80 packages in seconds where pip takes minutes;
# tox-uv makes tox build its nine environments with it too (tox.ini).
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check 'uv>=0.5'
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[test,lint,demo]' 'tox>=4.20' 'tox-uv>=1.20'
	touch $@

venv: $(BIN)/.installed

# Only the package's dependencies and the `demo` extra, read from pyproject.toml: the demo
# imports django_multismtp from this source tree (example_project/manage.py puts the
# repository on sys.path), so no build step. When $(PYTHON) has pip, that pip installs into
# a venv made without one (creating pip in the venv is the slowest step); --no-compile
# leaves byte-compiling to the modules the demo imports.
$(DEMO_BIN)/.installed: pyproject.toml
	rm -rf $(DEMO_VENV)
	set -e; \
	  if $(PYTHON) -m pip --python $(PYTHON) --version >/dev/null 2>&1; then \
	    $(PYTHON) -m venv --without-pip $(DEMO_VENV); pip="$(PYTHON) -m pip --python $(DEMO_BIN)/python"; \
	  else \
	    $(PYTHON) -m venv $(DEMO_VENV); pip="$(DEMO_BIN)/python -m pip"; \
	  fi; \
	  $(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	    print("\n".join(p["dependencies"] + p["optional-dependencies"]["demo"]))' \
	    > $(DEMO_VENV)/requirements.txt; \
	  $$pip install -q --no-compile -r $(DEMO_VENV)/requirements.txt
	touch $@

# Debian packages the suite needs: PostgreSQL for the second database, Chromium for the
# browser tests. Installed only when missing.
sysdeps:
	@missing=""; \
	  [ -x $(PGBIN)/initdb ] || missing="$$missing postgresql"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    echo "Installing Debian packages:$$missing"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi

# A throw-away PostgreSQL cluster on 127.0.0.1 (initdb refuses root, hence runuser).
pg-up:
	rm -rf $(PGDIR) && mkdir -p $(PGDIR) && chmod 700 $(PGDIR)
	$(if $(PGRUN),chown postgres: $(PGDIR))
	$(PYTHON) -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' > $(PGDIR)/port
	$(PGRUN) $(PGBIN)/initdb -D $(PGDIR)/data -U postgres -A trust -E UTF8 --no-sync -N >/dev/null
	$(PGRUN) $(PGBIN)/pg_ctl -D $(PGDIR)/data -l $(PGDIR)/log -w -o \
	  "-c listen_addresses=127.0.0.1 -p $$(cat $(PGDIR)/port) -k $(PGDIR) -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >/dev/null

pg-down:
	-$(PGRUN) $(PGBIN)/pg_ctl -D $(PGDIR)/data -m immediate -w stop >/dev/null
	rm -rf $(PGDIR)

# The whole suite: every supported Python/Django line on SQLite and PostgreSQL, Django's
# own SMTP backend tests against ours on each line, then lint, type and docs checks.
# Environments run three at a time (each uses its own database names, see tox.ini); tox
# prints each one's output when it finishes and exits non-zero if any failed. The cluster
# is stopped whatever the outcome.
TOX_PARALLEL ?= 3
# The interpreters of the three lines (pyenv's; tox.ini reads the same variables). uv finds
# an environment's interpreter on PATH by the python factor of its name (py312-...), so
# their directories go first on it; it never downloads one.
TOX_PY311 ?= /root/.pyenv/versions/3.11.7/bin/python3.11
TOX_PY312 ?= /root/.pyenv/versions/3.12.1/bin/python3.12
TOX_PY313 ?= /root/.pyenv/versions/3.13.0/bin/python3.13
export TOX_PY311 TOX_PY312 TOX_PY313
TOX_ENV := PATH=$(dir $(TOX_PY311)):$(dir $(TOX_PY312)):$(dir $(TOX_PY313)):$$PATH UV_PYTHON_DOWNLOADS=never
test: sysdeps venv pg-up
	PGPORT=$$(cat $(PGDIR)/port) $(TOX_ENV) $(BIN)/tox run-parallel -p $(TOX_PARALLEL) --parallel-no-spinner $(TOXARGS); rc=$$?; \
	  $(PGRUN) $(PGBIN)/pg_ctl -D $(PGDIR)/data -m immediate -w stop >/dev/null; rm -rf $(PGDIR); \
	  exit $$rc

lint: venv
	$(TOX_ENV) $(BIN)/tox run -e lint

type: venv
	$(TOX_ENV) $(BIN)/tox run -e type

docs: venv
	$(TOX_ENV) $(BIN)/tox run -e docs

# The example project with an embedded SMTP sink; see example_project/README.
# `manage.py demo` migrates the database itself; when a demo already serves from this
# clone it says so, prints its URL and exits 1 without touching its database or sink.
demo: $(DEMO_BIN)/.installed
	$(DEMO_BIN)/python example_project/manage.py demo $(DEMOARGS)

# Throughput, memory and queries against Django's stock SMTP backend on loopback sinks,
# then the outbox case (queue, drain with 1 and 2 worker processes) on a throw-away
# PostgreSQL cluster of its own, stopped whatever the outcome; see benchmarks/README.md.
# Never part of `make test`. OUTBOXARGS go to the outbox case ("--messages 0" skips it),
# WORKERSARGS to the 1/2/4-workers case (benchmarks/workers.py, the same; by default each
# worker 4 of an account's 16 connections, then the whole budget shared; about 8 minutes),
# ASYNCARGS to the async case (benchmarks/asyncsend.py: concurrent asend_messages() in
# process and under uvicorn, whose `bench` extra is installed here and nowhere else), run
# on SQLite after the main tables and on the PostgreSQL cluster after the workers.
# Postfix's smtp-sink (a C sink that is never the bottleneck) is installed when missing; the
# package also brings Postfix's mail service, which the benchmark does not use.
BENCHPG := $(PGDIR)-bench
$(BIN)/.bench-installed: pyproject.toml $(BIN)/.installed
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[bench]'
	touch $@

bench: venv sysdeps $(BIN)/.bench-installed
	@[ -x /usr/sbin/smtp-sink ] || { echo "Installing Debian package: postfix (for smtp-sink)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postfix >/dev/null; }
	$(BIN)/python -m benchmarks $(BENCHARGS)
	$(BIN)/python -m benchmarks.asyncsend $(ASYNCARGS)
	$(MAKE) --no-print-directory pg-up PGDIR=$(BENCHPG)
	PGPORT=$$(cat $(BENCHPG)/port) $(BIN)/python -m benchmarks.outbox $(OUTBOXARGS) && \
	  PGPORT=$$(cat $(BENCHPG)/port) $(BIN)/python -m benchmarks.workers $(WORKERSARGS) && \
	  PGPORT=$$(cat $(BENCHPG)/port) $(BIN)/python -m benchmarks.asyncsend --database pg $(ASYNCARGS); rc=$$?; \
	  $(MAKE) --no-print-directory pg-down PGDIR=$(BENCHPG); exit $$rc

# Mutation testing of the rules that protect users: each module against its own tests, one
# worker at the lowest priority; prints a score per module and the survivors. Takes
# minutes per module; never part of `make test`. MUTATE="netguard limits" runs only those;
# MUTATE="--again limits" reruns only the survivors of the last run (after adding tests).
# See docs/testing.rst.
$(BIN)/.mutate-installed: pyproject.toml $(BIN)/.installed
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[test,mutate]'
	touch $@

mutate: venv $(BIN)/.mutate-installed
	$(BIN)/python -m mutation $(MUTATE)

clean:
	rm -rf $(VENV) $(DEMO_VENV) .tox .demo .bench .mutate docs/_build
