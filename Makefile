# Two commands do all the set-up on a fresh machine:
#   make book   create .venv if needed, run every chapter (PROFILE=cpu), build the HTML book
#   make test   create .venv if needed, run every test
#   make lab    create .venv if needed, open the chapters in JupyterLab (as notebooks, live sliders)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; override for CUDA, e.g. make test TORCH_SPEC='torch>=2.3',
# and pass pip options with TORCH_PIP_ARGS (e.g. an --index-url).
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PROFILE ?= cpu

.PHONY: env book test lab bench gpu-check clean browser

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e ".[test]"
	touch $@

book: env
	$(PY) -m hesslab.book run --profile $(PROFILE)
	$(PY) -m hesslab.book build

test: env browser
	$(PY) -m pytest

# JupyterLab in the same environment as `make book`, on the repository, chapters opening as
# notebooks (jupytext); LAB_ARGS, e.g. --port 8890 --no-browser
LAB_ARGS ?=

lab: env
	$(PY) -m hesslab.book lab $(LAB_ARGS)

# Debian's headless Chromium for the built-book browser test (installed when we are root;
# otherwise that test is skipped and says why).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: the browser test will be skipped"; }

# benchmarks/peers.py compares hesslab with hessian-eigenthings and PyHessian (installed with
# --no-deps: they would otherwise pull their own torch); PEERS_ARGS, e.g. --quick or --repeats 5.
PEERS_ARGS ?=

bench: env
	$(PY) -m pip install -q --no-deps curvlinops-for-pytorch einops einconv linear_operator opt-einsum
	$(PY) -m pip install -q --no-deps hessian-eigenthings==1.0.0a5 pyhessian==0.1
	$(PY) benchmarks/hvp.py
	$(PY) benchmarks/peers.py $(PEERS_ARGS)
	$(PY) benchmarks/memory.py

# On a GPU machine: correctness on the device, HVP costs, paper-size spectra (about 8 minutes on one H200);
# stored with provenance in data/results/paper/gpucheck/ (commit it). Needs only torch and transformers:
#   PYTHONPATH=. python3 -m hesslab.experiments.gpucheck
gpu-check: env
	$(PY) -m hesslab.experiments.gpucheck --size paper --out data/results/paper/gpucheck

clean:
	rm -rf book/_build build .pytest_cache
