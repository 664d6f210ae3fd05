# Two entry points, both safe on a fresh clone: `make demo` and `make test`.
# Setting up makes .venv (seeing the system's packages, so a torch you already have is used and never replaced);
# torch==2.13.0 is installed only when no torch can be imported.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lowbit-installed
export HF_HUB_OFFLINE := 1

.PHONY: setup arm-tools demo test bench gpu-check clean

setup: $(STAMP) arm-tools

# The ARM kernel tests (tests/kernels/test_native_arm.py: the NEON variants cross-compiled, run under qemu-aarch64) need
# Debian's cross compiler and qemu-user: installed best-effort when we are root with apt-get, within 2 minutes
# (about 25 s on a clean Debian 12), never failing setup; without them those tests skip and say why.
ARM_TOOLS := gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
arm-tools:
	@command -v qemu-aarch64 >/dev/null && aarch64-linux-gnu-gcc -print-file-name=libc.a 2>/dev/null | grep -q ^/ \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && timeout 120 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	            apt-get install -y -qq --no-install-recommends $(ARM_TOOLS)' >/dev/null 2>&1; } \
	  || echo "ARM cross tools not installed (needs root and apt-get): the qemu tests in test_native_arm.py skip"

# The interop extra (compressed-tensors, for the export tests) is installed in two steps: its small dependencies
# normally, the package itself with --no-deps, so that its torch requirement can never replace the installed torch
# (transformers, which it imports, comes with the demo extra). It needs Python >= 3.11; without it those tests skip.

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,demo,images]"
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

# On a lent CUDA machine: the whole suite without the interpreter, then the GPU benchmark (see benchmarks/gpu_check.sh)
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
