# make run   : set up .venv (once), generate dvc.yaml from the methods and reproduce the pipeline with DVC
# make test  : set up .venv (once) and run the tests
# make setup : only the setup; a stamp file makes repeats instant (delete .venv/.setup-done to redo it)

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-done
SETUP_DEPS := pyproject.toml $(wildcard tools/gltf/package.json tools/gltf/package-lock.json) \
              $(wildcard tools/viewer/package.json tools/viewer/package-lock.json)

# cmds in dvc.yaml say `python`: the venv comes first on PATH
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)
# nothing may reach the network at run time
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

PYTEST_ARGS ?= -q --durations=10

.PHONY: setup run test clean-store

setup: $(STAMP)

# Setup notes: libeigen3-dev is for building pysdf. torch goes first and pinned: 2.13.0's CPU build lies on this
# machine's disk, an unpinned torch pulls a multi-GB CUDA build. nerfacc builds from source against the installed
# torch (hence --no-build-isolation); BUILD_NO_CUDA=1 skips its CUDA extension, its Python ops work on CPU
# (set BUILD_NO_CUDA=0 on a CUDA machine).

$(STAMP): $(SETUP_DEPS)
	@if [ ! -f /usr/include/eigen3/Eigen/Core ]; then \
	  echo "installing libeigen3-dev (needed to build pysdf)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y libeigen3-dev >/dev/null || \
	    (apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y libeigen3-dev >/dev/null); \
	  else echo "warning: not root; install libeigen3-dev yourself" >&2; fi; \
	fi
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	BUILD_NO_CUDA=$${BUILD_NO_CUDA:-1} $(PY) -m pip install -q --no-build-isolation nerfacc==0.5.3
	# pysdf's setup misreads Eigen 3.4's version and would download Eigen: point it at Debian's headers.
	CPATH=/usr/include/eigen3 $(PY) -m pip install -q pysdf==0.1.9
	if [ -d tools/gltf ]; then cd tools/gltf && (npm ci --no-audit --no-fund || npm install --no-audit --no-fund); fi
	# the reports' 3D viewer (@google/model-viewer; distill3d/report/html.py copies its bundle beside each page)
	if [ -d tools/viewer ]; then cd tools/viewer && (npm ci --no-audit --no-fund || npm install --no-audit --no-fund); fi
	touch $(STAMP)

JOBS ?= 2

run: $(STAMP)
	python -m flows.dvc_yaml   # dvc.yaml from the method definitions and params.yaml's prompts (no-op when current)
	python -m flows.dvc_parallel --jobs $(JOBS)   # the out-of-date stages, JOBS at a time, recorded in dvc.lock
	dvc repro                  # finds them up to date (runs whatever the line above could not)
	python -m flows.readme_claims   # README's claims table and per-method means from the metrics just made

test: $(STAMP)
	python -m pytest $(PYTEST_ARGS)

clean-store:  ## drop the content-addressed store and Prefect's local state (DISTILL3D_HOME)
	rm -rf .distill3d
