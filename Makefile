# Two entry points, both safe on a fresh clone: `make demo` and `make test`.
# Setting up makes .venv (seeing the system's packages, so a torch you already have is used and never replaced);
# torch==2.13.0 is installed only when no torch can be imported.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lowbit-installed
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test bench gpu-check clean

setup: $(STAMP)

# The interop extra (compressed-tensors, for the export tests) is installed in two steps: its small dependencies
# normally, the package itself with --no-deps, so that its torch requirement can never replace the installed torch
# (transformers, which it imports, comes with the demo extra). It needs Python >= 3.11; without it those tests skip.

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,demo]"
	$(PY) -c "import sys; sys.exit(sys.version_info < (3, 11))" \
	  && $(PY) -m pip install --quiet "pydantic>=2" loguru psutil \
	  && $(PY) -m pip install --quiet --no-deps "compressed-tensors>=0.17" \
	  || echo "compressed-tensors not installed (needs Python >= 3.11): the export interop tests will skip"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/lowbit demo

# Triton kernels run in Triton's CPU interpreter by default (CI has no GPU); on a GPU: make test TRITON_INTERPRET=0
TRITON_INTERPRET ?= 1
test: setup
	TRITON_INTERPRET=$(TRITON_INTERPRET) $(PY) -m pytest

bench: setup
	$(VENV)/bin/lowbit bench

# On a lent CUDA machine: the whole suite without the interpreter, then the GPU benchmark (see bench/gpu_check.sh)
gpu-check:
	bash bench/gpu_check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
