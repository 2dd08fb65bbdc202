#!/usr/bin/env bash
# The CUDA benchmarks and checks in one go (about 5 minutes on one H100/H200), for when a GPU machine is lent.
#
#   OUT=/some/dir bash benchmarks/gpu.sh
#
# Needs a Python with a CUDA build of torch (Triton comes with it) and pydantic (set PYTHON to choose
# it; default: .venv/bin/python if present, else python3). If pydantic is missing and a folder of
# wheels is at $WHEELS (default .whl; see docs/benchmarks.md for the pip download line), they are
# installed from there into a private folder, without a network. Results: $OUT/benchmarks.md (the
# sections the runs wrote), $OUT/*.log (full output), $OUT/setup.log (nvidia-smi, versions). Exits
# non-zero if a step failed; a failing quick check stops it before the long runs.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
WHEELS=${WHEELS:-.whl}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
status=0

nvidia-smi > "$OUT/setup.log" 2>&1 || true
if ! "$PYTHON" -c "import pydantic" 2>/dev/null && [ -d "$WHEELS" ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/gradwatch-site "$WHEELS"/*.whl >> "$OUT/setup.log" 2>&1
    export PYTHONPATH=$PWD:/tmp/gradwatch-site
fi
"$PYTHON" -c "import torch, pydantic, triton; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__, 'triton', triton.__version__, 'pydantic', pydantic.__version__, torch.cuda.get_device_name(0))" \
    2>&1 | tee -a "$OUT/setup.log"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "gpu.sh: need CUDA torch, Triton and pydantic in $PYTHON"; exit 2; }

run() {  # run NAME TIMEOUT COMMAND...: one step, its output in $OUT/NAME.log
    local name=$1 limit=$2; shift 2
    echo "== $name"
    if ! timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; then
        echo "gpu.sh: $name failed (see $OUT/$name.log)"; status=1
    fi
    tail -n 25 "$OUT/$name.log"
}

# Quick check of the whole CUDA path on a tiny model, and the tests that need a GPU: the host-sync
# test (any hidden synchronisation in a monitored step fails it) and the one-pass kernel's numbers.
run quick 120 "$PYTHON" benchmarks/agent_overhead.py --device cuda --model gpt-tiny --reps 1 --block 4 --warmup 2
if "$PYTHON" -c "import pytest" 2>/dev/null; then
    run cuda-tests 150 "$PYTHON" -m pytest -q -p no:cacheprovider tests/unit/test_agent_fused.py \
        tests/unit/test_agent_faults.py -k "cuda or pinned or kernel or one_pass"
fi
[ $status = 0 ] || { echo "gpu.sh: quick checks failed; not starting the long runs"; exit 1; }
# 1.3B GPT: about 0.2 s a step; 6 variants x 5 rounds x 22 steps.
run agent-gpt-1.3b 270 "$PYTHON" benchmarks/agent_overhead.py --device cuda --model gpt-1.3b --reps 5 --block 20 --write-docs
# 124M GPT: about 40 ms a step; 6 variants x 12 rounds x 22 steps.
run agent-gpt-124m 130 "$PYTHON" benchmarks/agent_overhead.py --device cuda --model gpt-124m --reps 12 --block 20 --write-docs
cp docs/benchmarks.md "$OUT/benchmarks.md"
exit $status
