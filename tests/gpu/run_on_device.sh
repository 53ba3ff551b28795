#!/usr/bin/env bash
# The whole GPU suite in one device call:  bash tests/gpu/run_on_device.sh [pytest args...]
# Runs from the repository root with the source tree on PYTHONPATH (the device image already has
# numpy, cuda-bindings, torch, cupy, jax). Logs go to $OUT (the device tool brings them back).
# SANITIZE=1 also runs compute-sanitizer memcheck and racecheck over the GEMM tests.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/nvfp4-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c "import cuda.bindings, torch; print('cuda.bindings', cuda.bindings.__version__, 'torch', torch.__version__)"
python3 -m nvfp4_driver info
python3 -m pytest -q -rs -p no:cacheprovider tests/gpu "$@" 2>&1 | tee "$OUT/gpu-suite.log"
rc=${PIPESTATUS[0]}
if [ "${SANITIZE:-0}" = 1 ]; then
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 9 --target-processes all \
      python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gemm_gpu.py -k "not 4gib and not ptx" -x 2>&1 \
      | tail -n 30 | tee "$OUT/sanitizer-$tool.log"
    s=${PIPESTATUS[0]}; [ "$s" = 0 ] || rc=$s
  done
fi
exit "$rc"
