#!/usr/bin/env bash
# The CUDA benchmarks in one go (< 8 minutes on one H100/H200), for when a GPU machine is lent.
#
#   OUT=/some/dir bash benchmarks/gpu.sh
#
# Needs a Python with a CUDA build of torch and pydantic (set PYTHON to choose it; default:
# .venv/bin/python if present, else python3). If pydantic is missing and a folder of wheels is at
# $WHEELS (default benchmarks/wheels; make it with `pip download pydantic -d benchmarks/wheels`), they
# are installed from there without a network. Results: $OUT/benchmarks.md (the sections the runs
# wrote), $OUT/*.log (full output), $OUT/nvidia-smi.txt. Exits non-zero if a step failed, after
# running the others.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WHEELS=${WHEELS:-benchmarks/wheels}
export PYTHONPATH=$PWD
status=0

nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
if ! "$PYTHON" -c "import pydantic" 2>/dev/null && [ -d "$WHEELS" ]; then
    "$PYTHON" -m pip install --no-index --find-links "$WHEELS" pydantic > "$OUT/pip.log" 2>&1 || true
fi
"$PYTHON" -c "import torch, pydantic; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name(0))" \
    | tee "$OUT/env.txt" || { echo "gpu.sh: need CUDA torch and pydantic in $PYTHON"; exit 2; }

run() {  # run NAME TIMEOUT COMMAND...: one step, its output in $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    echo "== $name"
    if ! timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
        echo "gpu.sh: $name failed (see $OUT/$name.log)"; status=1
    fi
    tail -n 20 "$OUT/$name.log"
}

# The host-sync test: any hidden synchronisation in a monitored step fails it.
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    run sync-test 90 "$PYTHON" -m pytest -q tests/unit/test_agent_faults.py -k "cuda or pinned" -p no:cacheprovider
fi
# 1.3B GPT: about 0.2-0.3 s a step; 5 variants x 6 rounds x 10 steps.
run agent-gpt-1.3b 270 "$PYTHON" benchmarks/agent_overhead.py --device cuda --model gpt-1.3b --reps 6 --block 10 --write-docs
# 124M GPT: about 40 ms a step; 5 variants x 12 rounds x 20 steps.
run agent-gpt-124m 150 "$PYTHON" benchmarks/agent_overhead.py --device cuda --model gpt-124m --reps 12 --block 20 --write-docs
cp docs/benchmarks.md "$OUT/benchmarks.md"
exit $status
