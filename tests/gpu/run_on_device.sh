#!/usr/bin/env bash
# The whole GPU suite in one device call:  bash tests/gpu/run_on_device.sh [pytest args...]
# Runs from the repository root with the source tree on PYTHONPATH (the device image already has
# numpy, cuda-bindings, torch, cupy, jax, numba). Logs go to $OUT (the device tool brings them back).
#
# SANITIZE=1 then runs compute-sanitizer's four tools over the kernels, in the same call:
#   memcheck   out-of-bounds and misaligned global/shared accesses (the clamping tests prove the
#              kernels stay inside the given tensors: exact-size cuMemAlloc operands)
#   racecheck  shared-memory hazards between threads of a block (the cp.async pipeline)
#   initcheck  reads of device memory nothing wrote (padding of the scale layouts must never be read)
#   synccheck  barriers that not every thread of a block reaches
# SANITIZE_TOOLS   the tools to run (default: all four)
# SANITIZE_TESTS   the test files they run (default: the GEMM and checked-mode tests)
# SANITIZE_K       pytest -k expression for them (default: not 4gib and not ptx: hours under the tools)
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX must not take the GPU's memory from the other frameworks
OUT="${OUT:-/tmp/nvfp4-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python3 -c "import cuda.bindings, torch; print('cuda.bindings', cuda.bindings.__version__, 'torch', torch.__version__)"
python3 -m nvfp4_driver info
python3 -m pytest -q -rs -p no:cacheprovider tests/gpu "$@" 2>&1 | tee "$OUT/gpu-suite.log"
rc=${PIPESTATUS[0]}
if [ "${SANITIZE:-0}" = 1 ]; then
  read -r -a files <<< "${SANITIZE_TESTS:-tests/gpu/test_gemm_gpu.py tests/gpu/test_checked_gpu.py}"
  for tool in ${SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}; do
    compute-sanitizer --tool "$tool" --error-exitcode 9 --target-processes all \
      python3 -m pytest -q -p no:cacheprovider "${files[@]}" -k "${SANITIZE_K:-not 4gib and not ptx}" -x 2>&1 \
      | tail -n 30 | tee "$OUT/sanitizer-$tool.log"
    s=${PIPESTATUS[0]}
    echo "compute-sanitizer $tool: exit $s" | tee -a "$OUT/sanitizer-summary.log"
    [ "$s" = 0 ] || rc=$s
  done
fi
exit "$rc"
