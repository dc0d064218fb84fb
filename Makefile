# make demo  - walk through the key types (sets everything up first)
# make test  - install what is missing and run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEB_PACKAGES := swtpm swtpm-tools tpm2-tools libtss2-dev keyutils libssl-dev pkg-config gcc e2fsprogs mount openssl cryptsetup-bin strace fuse3 mmc-utils
NATIVE := $(wildcard _native/*.c _native/*.h _native/*.py)
PYTEST_ARGS ?=

.PHONY: all test lint typecheck pytest demo deps venv build bench clean

all: test

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "warning: missing Debian packages (install them as root):$$missing" >&2; \
	  fi; \
	fi

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q -U pip setuptools wheel cffi

$(STAMP): $(VPY) pyproject.toml setup.py $(NATIVE)
	$(VPY) -m pip install -q -e '.[tpm,test]'
	@touch $@

venv: deps $(STAMP)

build: $(STAMP)
	$(VPY) setup.py -q build_ext --inplace

# Lint and type checks run first: they take seconds and fail before the long suite.
test: lint typecheck pytest

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VPY) -m pytest $(PYTEST_ARGS)

demo: venv
	$(VPY) examples/demo.py

bench: venv
	$(VPY) benchmarks/lifecycle.py

clean:
	rm -rf build $(VENV) *.egg-info keyring_types/bindings/*.so keyring_types/bindings/_*.c
