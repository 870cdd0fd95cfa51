# Polymarket deployment: build host entry points.
#   make        install build dependencies (as root), build and lint every package into dist/,
#               publish them into the signed apt repository dist/repo/, and render the
#               autoinstall media of every host of autoinstall/inventory.yaml into dist/autoinstall/
#   make test   install test dependencies, then run unit, package and system tests
# See README.md.

PYTHON     ?= /usr/bin/python3
VENV       := .venv
PYTEST     := $(VENV)/bin/pytest
BUILDER    := PATH=/usr/sbin:/usr/bin:/sbin:/bin $(PYTHON) -m builder

# The apt repository (README "The apt repository"): the URL servers use, and
# the operator's signing key (fingerprint, GnuPG home); without a key the
# repository is signed with a development key made once in .cache/dev-gnupg/.
REPO_URL         ?=
SIGNING_KEY      ?=
SIGNING_GNUPGHOME ?=
PUBLISH_ARGS := $(if $(REPO_URL),--url $(REPO_URL)) $(if $(SIGNING_KEY),--key $(SIGNING_KEY)) \
                $(if $(SIGNING_GNUPGHOME),--gnupghome $(SIGNING_GNUPGHOME))

BUILD_DEPS := build-essential debhelper dpkg-dev po-debconf lintian shellcheck fakeroot \
              python3 python3-debian python3-jinja2 python3-yaml python3-venv \
              python3-stdeb dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
              apt-utils gnupg gpgv xorriso python3-jsonschema
TEST_DEPS  := systemd-container mmdebstrap zstd iproute2 debian-archive-keyring \
              util-linux uidmap qemu-system-x86 e2fsprogs openssh-client \
              prometheus prometheus-alertmanager chromium \
              $(shell cat packages/polymarket-bot/DEPENDS)
# Python tools for the tests only (never needed at run time on a server).
TEST_PIP   := pytest==9.2.0 pytest-xdist==3.8.0 ruff==0.17.6 mypy==2.4.1 types-PyYAML==6.0.12.20261113 py-clob-client-v2==1.2.1 "moto[server]==5.2.5"

.PHONY: all deps test-deps venv build publish media lint check test test-unit test-system bench bench-ha clean distclean

all: deps build publish media

# Install what is missing when root; otherwise print the one line to run.
define ensure_pkgs
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "error: missing packages; run: sudo apt-get install --no-install-recommends" $$missing >&2; exit 3; \
	  fi; \
	fi
endef

deps:
	$(call ensure_pkgs,$(BUILD_DEPS))

test-deps: deps
	$(call ensure_pkgs,$(TEST_DEPS))

$(VENV)/.stamp: Makefile
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check $(TEST_PIP)
	touch $@

venv: $(VENV)/.stamp

check: deps
	$(BUILDER) check

build: deps
	$(BUILDER) build

# Every .deb in dist/ joins dist/repo/pool; every version published before stays.
publish: build
	$(BUILDER) publish $(PUBLISH_ARGS)

# USB seeds, PXE tree: README "Autoinstall media". Needs the repository's key from publish.
media: publish
	$(BUILDER) autoinstall

lint: deps venv
	$(BUILDER) lint --python

# make test runs two pytest sessions side by side, each with TEST_JOBS workers and one test file per worker
# (--dist loadfile: a module's booted cluster stays on one worker): trixie with every test (unit, package,
# bot, VM tier, containers), and the container tests again on the other side of noble, a Debian bookworm
# root filesystem (README "Noble and its neighbours"). Most system tests wait on booted containers rather
# than compute, so 2+2 workers on 2 cores overlap the waits. Bookworm's output is kept in BOOKWORM_LOG
# and printed after trixie's; the exit status fails if either session failed.
TEST_JOBS    ?= 2
BOOKWORM_LOG := .cache/make-test-bookworm.log
PYTEST_PAR   := $(PYTEST) -ra -n $(TEST_JOBS) --dist loadfile

test: test-deps venv build
	@mkdir -p .cache
	@echo "== make test: trixie (everything) here, and the container tests on bookworm side by side in $(BOOKWORM_LOG)"
	@POLYMARKET_TEST_SUITE=bookworm $(PYTEST_PAR) -m system tests/system >$(BOOKWORM_LOG) 2>&1 & bw=$$!; \
	$(PYTEST_PAR) tests; trixie=$$?; \
	if kill -0 $$bw 2>/dev/null; then echo "== trixie done; waiting for bookworm ($(BOOKWORM_LOG))"; fi; \
	wait $$bw; bookworm=$$?; \
	echo "== bookworm (POLYMARKET_TEST_SUITE=bookworm -m system tests/system):"; cat $(BOOKWORM_LOG); \
	echo "== make test: trixie exit $$trixie, bookworm exit $$bookworm"; \
	[ $$trixie -eq 0 ] && [ $$bookworm -eq 0 ]

test-unit: venv
	$(PYTEST) -ra -m "not system" tests

test-system: test-deps venv build
	$(PYTEST_PAR) -m system tests
	POLYMARKET_TEST_SUITE=bookworm $(PYTEST_PAR) -m system tests/system

bench: test-deps venv
	$(VENV)/bin/python packages/polymarket-bot/bench/bench.py

# Failover times on the system tests' three-node cluster (root; ~10 min): not part of bench. One HA
# cluster at a time on this machine (fixed namespace names): the lock the HA system tests take too.
bench-ha: test-deps venv
	flock /tmp/ha-system-test.lock $(VENV)/bin/python -m tests.bench.bench_ha --runs 5

# clean keeps dist/repo/: it holds every version ever published (rollback).
clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
	[ ! -d dist ] || find dist -mindepth 1 -maxdepth 1 ! -name repo -exec rm -rf {} +
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# distclean also deletes the repository and the development signing key.
distclean: clean
	rm -rf $(VENV) .cache dist
