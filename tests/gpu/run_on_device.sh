#!/usr/bin/env bash
# The whole GPU suite in one device call:  bash tests/gpu/run_on_device.sh [pytest args...]
# Runs from the repository root with the source tree on PYTHONPATH (the device image already has
# numpy, cuda-bindings, torch, cupy, jax, numba). Logs go to $OUT (the device tool brings them back).
#
# SANITIZE=1 then runs compute-sanitizer's four tools over the kernels, in the same call, side by side
# (separate processes on the one GPU: the wall time is the slowest tool's, not the sum):
#   memcheck   out-of-bounds and misaligned global/shared accesses (the clamping tests prove the
#              kernels stay inside the given tensors: exact-size cuMemAlloc operands)
#   racecheck  shared-memory hazards between threads of a block (the cp.async pipeline)
#   initcheck  reads of device memory nothing wrote (padding of the scale layouts must never be read)
#   synccheck  barriers that not every thread of a block reaches
# SANITIZE_TOOLS    the tools to run (default: all four)
# SANITIZE_TESTS    the test files they run (default: the GEMM (portable, twin, wgmma, sm90ws), checked-mode, quantizer and fused SiLU·up quantizer tests)
# SANITIZE_K        pytest -k expression for them (default: not 4gib and not ptx: hours under the tools)
# SANITIZE_TIMEOUT  seconds each tool may run (default: no limit); a tool stopped by it counts as failed
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
  read -r -a files <<< "${SANITIZE_TESTS:-tests/gpu/test_gemm_gpu.py tests/gpu/test_gemm_wgmma_gpu.py tests/gpu/test_gemm_sm90ws_gpu.py tests/gpu/test_checked_gpu.py tests/gpu/test_quantize_gpu.py tests/gpu/test_silu_mul_quantize_gpu.py}"
  limit=()
  [ "${SANITIZE_TIMEOUT:-0}" != 0 ] && limit=(timeout "$SANITIZE_TIMEOUT")
  tools=(${SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck})
  pids=()
  for tool in "${tools[@]}"; do
    # --report-api-errors no: the loader asks cuFuncGetParamInfo for one parameter past a kernel's last
    # (driver.param_layout: CUDA_ERROR_INVALID_VALUE there is how an extra parameter is ruled out), and
    # memcheck would count that expected answer as an error at every kernel load. Device-side faults,
    # races and uninitialised reads are reported as before.
    "${limit[@]}" compute-sanitizer --tool "$tool" --report-api-errors no --error-exitcode 9 --target-processes all \
      python3 -m pytest -q -p no:cacheprovider "${files[@]}" -k "${SANITIZE_K:-not 4gib and not ptx}" -x \
      > "$OUT/sanitizer-$tool.log" 2>&1 &
    pids+=($!)
  done
  : > "$OUT/sanitizer-summary.log"
  for i in "${!tools[@]}"; do  # not piped: wait needs this shell, the jobs' parent
    wait "${pids[$i]}"
    s=$?
    { echo "== compute-sanitizer ${tools[$i]}: exit $s"; tail -n 12 "$OUT/sanitizer-${tools[$i]}.log"; } \
      >> "$OUT/sanitizer-summary.log"
    [ "$s" = 0 ] || rc=$s
  done
  cat "$OUT/sanitizer-summary.log"
fi
exit "$rc"
