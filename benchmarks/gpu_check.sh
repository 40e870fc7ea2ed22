#!/usr/bin/env bash
# Every GPU-only check of the CUDA backend, in one command, on a machine with an NVIDIA GPU:
#   bash benchmarks/gpu_check.sh            (from the repository root; writes gpu_check.log)
# 1. the driver parity suite on the real device (the CUDA-simulator script of the tests, run
#    without the simulator: every kernel family against the CPU, bit for bit);
# 2. fpsim validate hardware: float16 and bfloat16 add/mul/fma (all 2^32 pairs; fma x 7
#    addends) and the float32 -> float16 / bfloat16 conversions (all 2^32 inputs);
# 3. the fake-quantization throughput benchmark against the device's copy bandwidth.
# Uses the Python found on PATH with its installed numpy / numba(-cuda) (no install step: the
# device image has no network); fpsim is taken from this checkout.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD:$PWD/tests${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
{
  date -u; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
  $PY -c "import numpy, numba; print('numpy', numpy.__version__, 'numba', numba.__version__)"
  echo "== 1. driver parity on the device"; time $PY tests/_cudasim_check.py | tail -3
  echo "== 2. hardware validation"; time $PY -m fpsim validate hardware --format float16,bfloat16 --op add,mul,fma,convert
  echo "== 3. throughput"; $PY benchmarks/bench_gpu.py
} 2>&1 | tee gpu_check.log
