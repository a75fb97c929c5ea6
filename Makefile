# make run | stop | status | check | test | bench — each works from a fresh clone.
# make install: a production virtualenv (the app and uwsgi only), for /srv/wsgiapp.
# Debian packages are installed with apt-get when missing (as root, or through sudo);
# everything Python lives in the virtualenv $(VENV); all runtime state lives in $(VAR)/.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VAR ?= var
PORT ?= 8080
TLS_PORT ?= 8443
METRICS_PORT ?= 9117
BIN := $(VENV)/bin
# What a server needs (the build headers are for mysqlclient and uwsgi), then what the
# development stack and the tests add.
SERVER_PACKAGES := mariadb-client libmariadb-dev pkg-config gcc python3-dev python3-venv openssl
# Prometheus and an exporter per part, for `make monitor` (promtool tests the alert rules).
MONITOR_PACKAGES := prometheus prometheus-alertmanager prometheus-nginx-exporter prometheus-mysqld-exporter \
                    prometheus-node-exporter prometheus-blackbox-exporter
DEBIAN_PACKAGES := $(SERVER_PACKAGES) mariadb-server nginx chromium wrk iproute2 systemd-container debootstrap \
                   $(MONITOR_PACKAGES)

.PHONY: all deps venv install run monitor stop status check env sql logs lint test test-unit docs mutation faults bench clean \
        server server-stop \
        cluster cluster-status cluster-deploy cluster-stop cluster-monitor
all: run

deps:
	@missing=$$(for p in $(or $(PACKAGES),$(DEBIAN_PACKAGES)); do \
	    dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "==> installing Debian packages:" $$missing; \
	    sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	    $$sudo apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed
$(VENV)/.installed: setup.cfg pyproject.toml | deps
	@echo "==> creating the virtualenv $(VENV) (uwsgi compiles from source: a minute or two)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

# Production: the package and uwsgi, not editable, no test tools.
install:
	@$(MAKE) -s deps PACKAGES="$(SERVER_PACKAGES)"
	@echo "==> creating the virtualenv $(VENV) with the app and uwsgi (uwsgi compiles: a minute or two)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '.[server]'

lint: venv
	$(BIN)/ruff check wsgiapp launcher tests bench

# The tier that needs no MariaDB, nginx or uwsgi: seconds, for every edit.
test-unit: venv
	$(BIN)/python -m pytest -q tests/unit

# The manual (docs/), as HTML in $(VAR)/docs; a warning or a broken reference is an error.
docs: venv
	$(BIN)/sphinx-build -q -W -n --keep-going -b html docs $(VAR)/docs
	@echo "==> the manual: $(VAR)/docs/index.html"

# How much of the unit tier fails when the code is changed: mutmut over the four modules
# that need no server (setup.cfg [mutmut]); docs/mutation.rst lists the survivors and why.
mutation: venv
	@rm -rf mutants
	$(BIN)/mutmut run --max-children 2 >/dev/null 2>&1 || true
	$(BIN)/python -m tests.mutation_score

# The suite must leave the work tree as it found it: `git status` is compared before and after.
test: venv lint docs
	@git status --porcelain > $(VENV)/status-before 2>/dev/null || true
	$(BIN)/python -m pytest -m 'not slow'
	@git status --porcelain 2>/dev/null | diff -u $(VENV)/status-before - \
	    || { echo 'make test changed the work tree (above): a test writes where it should not'; exit 1; }

# The whole fault suite: 10,000 generated requests, crashes, sqlmap and schemathesis.
faults: venv
	@dpkg-query -W -f='$${Status}' sqlmap 2>/dev/null | grep -q 'install ok installed' || { \
	    sudo=; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	    DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends sqlmap >/dev/null; }
	$(BIN)/pip install -q -e '.[test,faults]'
	WSGIAPP_FUZZ_EXAMPLES=10000 $(BIN)/python -m pytest -rA tests/faults

bench: venv
	$(BIN)/python -m bench.run

clean: stop cluster-stop server-stop
	rm -rf $(VAR) $(VENV) *.egg-info

STACK = $(BIN)/python -m launcher
run: venv
	@$(STACK) up $(VAR) --port $(PORT) --tls-port $(TLS_PORT) --metrics-port $(METRICS_PORT)

monitor: run
	@$(STACK) monitor-up $(VAR) --port $(PORT) --tls-port $(TLS_PORT) --metrics-port $(METRICS_PORT)

stop:
	@if [ -x $(BIN)/python ]; then $(STACK) down $(VAR) --port $(PORT) --tls-port $(TLS_PORT); fi

status:
	@$(STACK) status $(VAR) --port $(PORT) --tls-port $(TLS_PORT)

check: venv
	@$(STACK) check $(VAR) --port $(PORT) --tls-port $(TLS_PORT)

# eval "$$(make -s env)": DATABASE_URL and WSGIAPP_API_TOKEN of the private stack.
env:
	@$(STACK) env $(VAR)

# A SQL shell on the private MariaDB, as its administrator.
sql:
	@$(STACK) sql $(VAR)

# One request's path by its id (X-Request-ID): the lines of nginx and of the app that name it,
# on make run's stack and on the cluster's edge and app hosts, in time order.
logs: venv
	@$(STACK) logs $(VAR) --id '$(ID)'

# More than one host (docs/cluster.rst): an edge, APP_NODES app hosts, a database primary and
# DB_REPLICAS replicas, each a booted Debian 12 server (systemd-nspawn, as root) on a private
# bridge, provisioned over SSH by the playbook a user runs against their own servers
# (deploy/site.yml, docs/playbook.rst). Run again: it changes nothing. State in $(VAR)/cluster:
# the inventory, the control machine's secrets/, and topology.json (what runs where).
APP_NODES ?= 3
DB_REPLICAS ?= 1
CLUSTER = $(STACK) $(addprefix cluster-,$(1)) $(VAR)/cluster --apps $(APP_NODES) --replicas $(DB_REPLICAS)
cluster: venv
	@$(call CLUSTER,up)

cluster-status:
	@$(call CLUSTER,status)

# This checkout's code onto the app hosts one at a time (deploy/rolling.yml), with no failed request.
cluster-deploy: venv
	@$(call CLUSTER,deploy)

cluster-stop:
	@if [ -x $(BIN)/python ]; then $(call CLUSTER,down); fi

# Prometheus on this machine for the running cluster: every host's exporters (provisioned by
# the playbook's monitoring role), the rules and the dashboard of make monitor.
cluster-monitor: venv
	@$(call CLUSTER,monitor)

# A booted Debian 12 server (systemd-nspawn, as root) with this checkout deployed on it by
# docs/deploy.rst's steps, as on a real machine: `make server` prints its URL (docs/server.rst).
server: venv
	@$(BIN)/python -m launcher.server up $(VAR)/server

server-stop:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m launcher.server down $(VAR)/server; fi

