#!/usr/bin/env bash
# The one GPU check, for a lent CUDA machine (torch and Triton installed, no network): install lowbit from this
# working tree, run the whole test suite with real Triton (no interpreter), then the GPU GEMM benchmark (gemlite
# beside it when it imports). Log, environment and tables land in one folder: $1, else $OUT (the device tool's),
# else gpu_check_out/. Budget: under 8 minutes (suite <= 330 s, benchmark <= 120 s).
#   device run:  bash benchmarks/gpu_check.sh            (then copy $OUT/* to benchmarks/results/gpu_<date>/)
set -uo pipefail
cd "$(dirname "$0")/.."
dest=${1:-${OUT:-gpu_check_out}}
mkdir -p "$dest"
py=${PYTHON:-python3}
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  git rev-parse --short HEAD 2>/dev/null
} > "$dest/env.txt" 2>&1

# editable install without network or build isolation; fall back to the source tree on the path
"$py" -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$dest/install.log" 2>&1 \
  || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

timeout 330 "$py" -m pytest -q -p no:cacheprovider -o addopts="" --junitxml="$dest/suite.xml" > "$dest/suite.log" 2>&1
suite=$?
timeout 120 "$py" -m benchmarks.gemm_gpu --quick --out "$dest" > "$dest/bench.log" 2>&1
bench=$?
tail -3 "$dest/suite.log"
tail -25 "$dest/bench.log"
echo "suite exit $suite, benchmark exit $bench; files in $dest"
[ "$suite" -eq 0 ] && [ "$bench" -eq 0 ]
