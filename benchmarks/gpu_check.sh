#!/usr/bin/env bash
# Every GPU-only check of the CUDA backend, in one command, on a machine with an NVIDIA GPU:
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]     (from anywhere; default ./gpu_check)
# Each step writes its own log (and JSON where it has one) into RESULTS_DIR, and summary.txt
# collects the lines that matter. The steps, run side by side (Numba compiles on one core per
# process, so the CPU kernels' first compilation is spread over processes):
#   warmup    fpsim warmup --all: the CPU kernels the other steps compare against;
#   bench     the fake-quantization throughput against the device's copy bandwidth, then
#   hardware  fpsim validate hardware: float16 and bfloat16 add/sub/mul/div/fma (all 2^32
#             pairs; fma x 7 addends) and float32 -> float16 / bfloat16 (all 2^32 inputs)
#   casts     torch's own CUDA casts from float32 to fp16 / bf16 / FP8 against fpsim, all 2^32
#             inputs (benchmarks/gpu_casts.py)
#             (bench, hardware and casts one after the other, so the benchmark has the GPU alone);
#   parity-1, parity-2   the driver parity script of the tests (tests/_cudasim_check.py) on the
#             real device: every kernel family against the CPU, bit for bit, in two halves;
#   torch     the PyTorch bridge's bit-for-bit tests on CUDA tensors (pytest -k cuda);
#   gemm      the tensor-core models against the device's cuBLAS GEMMs (benchmarks/gpu_gemm.py).
# Every step stops after GPU_CHECK_LIMIT seconds (default 420), so the whole command does too;
# GPU_CHECK_STEPS picks steps (default: all of "warmup bench hardware casts parity torch gemm
# gemm-large").
# With .gpu/parity-refs.npz (GPU_CHECK_REFS), recorded ahead by
#   python tests/_cudasim_check.py --record .gpu/parity-refs.npz
# the parity steps compile no CPU kernel, and the warm-up is skipped.
# Uses the Python found on PATH (or $PYTHON) with its installed numpy / numba-cuda / torch (no
# install step); fpsim is taken from this checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
R=$(mkdir -p "${1:-gpu_check}" && cd "${1:-gpu_check}" && pwd)
export PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Up to eight processes share the cores: four Numba threads each, not one per core each.
export NUMBA_NUM_THREADS=${NUMBA_NUM_THREADS:-4}
PY=${PYTHON:-python3}
LIMIT=${GPU_CHECK_LIMIT:-420}
T0=$(date +%s)

step() {  # step NAME COMMAND...: run it under the time limit, log to NAME.log, note its end
  local name=$1; shift
  local t=$(date +%s)
  timeout "$LIMIT" "$@" >"$R/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $(( $(date +%s) - t )) s (started at +$(( t - T0 )) s)" \
    >>"$R/steps.txt"
}

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  nvidia-smi | head -4 | tail -1
  echo "cores: $(nproc)"
  $PY - <<'EOF'
import importlib.metadata as m, platform
print("python", platform.python_version())
for p in ("numpy", "numba", "numba-cuda", "llvmlite", "torch", "cupy-cuda13x", "ml_dtypes"):
    try:
        print(p, m.version(p))
    except m.PackageNotFoundError:
        print(p, "not installed")
EOF
} >"$R/env.txt" 2>&1

half() {  # the case ids of _cudasim_cases.py (with the torch ones), in two halves by family
  $PY -c "
from _cudasim_cases import case_ids, torch_case_ids
ids = case_ids() + torch_case_ids()
first = [c for c in ids if c.split('-')[0] in ('quantize', 'encode', 'decode', 'hw', 'torch')]
print(' '.join(first if '$1' == '1' else [c for c in ids if c not in first]))"
}

# The parity script's CPU side: recorded ahead (REFS, see tests/_cudasim_check.py --record), or
# computed here (minutes of CPU-kernel compilation on a cold cache).
REFS=${GPU_CHECK_REFS:-.gpu/parity-refs.npz}
EXPECT=(); [ -f "$REFS" ] && EXPECT=(--expected "$REFS")
STEPS=" ${GPU_CHECK_STEPS:-warmup bench hardware casts parity torch gemm gemm-large} "
on() { [[ $STEPS == *" $1 "* ]]; }

# (the warm-up runs training cells, which need fpsim.models: the project installed for its
# package map, in place, without dependencies or network)
on warmup && [ ${#EXPECT[@]} -eq 0 ] && {
  $PY -c "import fpsim.models" 2>/dev/null || $PY -m pip install -q --no-deps \
    --no-build-isolation --no-index -e . >"$R/install.log" 2>&1
  step warmup $PY -m fpsim warmup --all --jobs 8; } &
( on bench && step bench $PY benchmarks/bench_gpu.py
  # (`fpsim validate hardware`, called without the CLI, which needs fpsim installed)
  on hardware && step hardware $PY -c "import argparse, sys; from fpsim.validate import hardware
sys.exit(hardware.run(argparse.Namespace(format='float16,bfloat16',
                                         op='add,sub,mul,div,fma,convert', limit=None)))"
  on casts && step casts $PY benchmarks/gpu_casts.py ) &
if on parity; then
  step parity-1 $PY tests/_cudasim_check.py --device "${EXPECT[@]}" "$R/parity-1.json" $(half 1) &
  step parity-2 $PY tests/_cudasim_check.py --device "${EXPECT[@]}" "$R/parity-2.json" $(half 2) &
fi
on torch && step torch $PY -m pytest -q -p no:cacheprovider -k cuda tests/test_torch.py &
on gemm && step gemm $PY benchmarks/gpu_gemm.py --json "$R/gemm.json" &
# large products (few cuBLAS split-K choices): the GPU's own preset only
on gemm-large && NUMBA_NUM_THREADS=12 step gemm-large $PY benchmarks/gpu_gemm.py --mn 2048 \
  --ks 1024,4096 --only fp16:fp32-out,bf16:fp32-out --dists normal --no-fit \
  --json "$R/gemm-large.json" &
wait

{
  echo "== steps"; cat "$R/steps.txt"
  echo "== parity (cases equal / run)"
  $PY - "$R" <<'EOF'
import json, pathlib, sys
r = {}
for p in sorted(pathlib.Path(sys.argv[1]).glob("parity-*.json")):
    r.update(json.loads(p.read_text()))
bad = {k: v for k, v in r.items() if not (isinstance(v, dict) and v.get("ok"))}
print(f"{len(r) - len(bad)} / {len(r)} equal")
for k, v in bad.items():
    print(" ", k, str(v.get("detail", v) if isinstance(v, dict) else v)[:400])
EOF
  for f in hardware casts bench torch gemm gemm-large warmup; do
    [ -f "$R/$f.log" ] && { echo "== $f"; grep -v "NumbaPerformanceWarning\|warn(" "$R/$f.log" \
      | tail -60; }
  done
} >"$R/summary.txt" 2>&1
cat "$R/summary.txt"
