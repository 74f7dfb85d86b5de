#!/usr/bin/env bash
# The one prepared script for a lent NVIDIA GPU (torch 2.11 / triton 3.6 / Python 3.12 there).
# Usage (device tool): bash bench/gpu_check.sh [smoke|quick|full]     results land in $OUT (or ./out).
# Stages: install -> numerics (zoo vs eager and fp64) -> kernel bandwidth vs copy -> zoo steady
# times eager / Inductor / agnostic -> where a step's time goes (host vs device busy, torch.profiler;
# gpt2, mlp) -> agnostic's steady times with every launch through Triton's JIT -> (quick, full)
# agnostic's steady times with CUDA graphs, then the GPU tests (launch, CUDA graphs, CuPy C kernels)
# and the zoo's steady times with emitter="c" and "autotune". Each stage has its own time limit so
# one slow stage cannot eat the lease; the tables print last. The defaults add up past one 600 s device call; to fit one:
#   T_NUMERICS=100 T_KERNELS=60 T_COMPARE=170 T_PROFILE=100 T_JIT=60 bash bench/gpu_check.sh smoke
set -uo pipefail
MODE=${1:-quick}
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error HF_HUB_OFFLINE=1
export AGNOSTIC_RT_CACHE_DIR=/tmp/agnostic_cache TRITON_CACHE_DIR=/tmp/triton_cache
PY=python3

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  $PY -c "import torch, triton, sys; print('torch', torch.__version__, 'triton', triton.__version__, 'python', sys.version.split()[0])"
} 2>&1 | tee "$OUT/env.txt"

# The package's dependencies are already in the image; install ours alone, offline.
$PY -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$OUT/install.log" 2>&1 \
  || { echo "install failed"; tail -20 "$OUT/install.log"; exit 1; }

case "$MODE" in
  smoke) MODELS="mlp gpt2" ;;
  quick) MODELS="mlp cnn gpt2 bert_eager" ;;
  *) MODELS="mlp cnn gpt2 gpt2_eager bert bert_eager" ;;
esac

timeout ${T_NUMERICS:-200} $PY bench/gpu_numerics.py --models $MODELS --json "$OUT/numerics.json" > "$OUT/numerics.log" 2>&1
echo "numerics exit $?" >> "$OUT/numerics.log"
timeout ${T_KERNELS:-120} $PY bench/gpu_kernels.py --gib 1 --json "$OUT/kernels.json" > "$OUT/kernels.log" 2>&1
echo "kernels exit $?" >> "$OUT/kernels.log"
timeout ${T_COMPARE:-300} $PY bench/compare.py --inprocess --device cuda --backends eager inductor agnostic \
  --models $MODELS --steps 30 --json "$OUT/compare.json" > "$OUT/compare.log" 2>&1
echo "compare exit $?" >> "$OUT/compare.log"
timeout ${T_PROFILE:-120} $PY bench/gpu_profile.py --models gpt2 mlp --json "$OUT/profile.json" > "$OUT/profile.log" 2>&1
echo "profile exit $?" >> "$OUT/profile.log"

# The same steady times with every launch through Triton's JIT (the binary's own runner off).
AGNOSTIC_RT_DIRECT_LAUNCH=0 timeout ${T_JIT:-90} $PY bench/compare.py --inprocess --device cuda --backends agnostic \
  --models mlp gpt2 --steps 30 > "$OUT/jit_launch.log" 2>&1
echo "jit-launch exit $?" >> "$OUT/jit_launch.log"

if [ "$MODE" != smoke ]; then
  # agnostic replaying static programs as CUDA graphs (options cudagraphs; mode="reduce-overhead").
  timeout ${T_CUDAGRAPHS:-90} $PY bench/compare.py --inprocess --device cuda --backends agnostic \
    --options '{"cudagraphs": true}' --models mlp gpt2 --steps 30 > "$OUT/cudagraphs.log" 2>&1
  echo "cudagraphs exit $?" >> "$OUT/cudagraphs.log"
  timeout ${T_EMITTERS:-150} bash -c "$PY -m pytest -q -m gpu tests/test_triton_launch.py tests/test_emitters.py tests/test_cuda_c.py; \
    for e in c autotune; do $PY bench/compare.py --inprocess --device cuda --backends agnostic \
      --options '{\"emitter\": \"'\$e'\"}' --models mlp gpt2 --steps 30; done" > "$OUT/emitters.log" 2>&1
  echo "emitters exit $?" >> "$OUT/emitters.log"
fi

echo; echo "== numerics"; grep -E '^\||exit' "$OUT/numerics.log" | tail -20
echo; echo "== kernels"; grep -E '^\||copy bandwidth|exit' "$OUT/kernels.log" | tail -12
echo; echo "== steady times"; grep -E '^\||exit' "$OUT/compare.log" | tail -30
echo; echo "== profile"; grep -E '^\||^machine|exit|^top (host|device) [a-z0-9_]+/[a-z]+/agnostic ' "$OUT/profile.log" | tail -24
[ -f "$OUT/jit_launch.log" ] && { echo; echo "== agnostic with JIT launches"; grep -E '^\||exit' "$OUT/jit_launch.log" | tail -8; }
[ -f "$OUT/cudagraphs.log" ] && { echo; echo "== agnostic with CUDA graphs"; grep -E '^\||exit' "$OUT/cudagraphs.log" | tail -8; }
[ -f "$OUT/emitters.log" ] && { echo; echo "== C emitter"; grep -E '^\||passed|failed|exit' "$OUT/emitters.log" | tail -14; }
