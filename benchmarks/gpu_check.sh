#!/usr/bin/env bash
# GPU validation in one run (see GPU.md): install, NVRTC check, precompile (every kernel and dtype), pytest -m gpu,
# compute-sanitizer memcheck + racecheck, kernel bandwidth vs a device-to-device copy, the throughput benchmark,
# and a summary table at the end.
#
#   bash benchmarks/gpu_check.sh RESULTS_DIR
#
# Every step runs even if an earlier one failed; each step's output is in RESULTS_DIR/logs/<step>.log, the
# summary in RESULTS_DIR/summary.txt. Exit status: 0 when every step passed, 1 otherwise.
# Needs no network: a CUDA machine with torch, CuPy, numpy and pytest already installed.
# Environment: PYTHON (default python3), SKIP_BENCH=1 to skip the long throughput benchmark,
# SRU_WHEELS=DIR to install the `sru` 2.6 package offline from a folder of wheels for the comparison.
set -u -o pipefail

OUT=${1:?usage: benchmarks/gpu_check.sh RESULTS_DIR}
PY=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
SUMMARY=()
FAILED=0

step() {  # step NAME COMMAND...: run, log, record pass/fail and seconds
    local name=$1
    shift
    local log="$OUT/logs/$name.log"
    local t0
    t0=$(date +%s)
    echo "=== [$name] $*" | tee "$log"
    "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    local dt=$(($(date +%s) - t0))
    if [ "$rc" -eq 0 ]; then
        SUMMARY+=("$(printf '%-18s PASS  %5ss' "$name" "$dt")")
    else
        SUMMARY+=("$(printf '%-18s FAIL  %5ss  (exit %s, see logs/%s.log)' "$name" "$dt" "$rc" "$name")")
        FAILED=1
    fi
    return 0
}

find_sanitizer() {
    command -v compute-sanitizer 2>/dev/null && return 0
    local c
    for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
             /opt/nvidia/*/compute-sanitizer/compute-sanitizer; do
        [ -x "$c" ] && { echo "$c"; return 0; }
    done
    return 1
}

environment() {  # nvidia-smi, versions and backends; the versions also go to $ENV_JSON
    nvidia-smi || true
    "$PY" - <<'PY'
import json, platform, torch
info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
try:
    import cupy
    info["cupy"] = cupy.__version__
    info["cupy_nvrtc"] = ".".join(map(str, cupy.cuda.nvrtc.getVersion()))
    info["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
except Exception as exc:
    info["cupy_error"] = repr(exc)
import parrnn
info["parrnn"] = parrnn.__version__
info["backends"] = {k: list(v) for k, v in parrnn.available_backends().items()}
import os
text = json.dumps(info, indent=2)
print(text)
open(os.environ["ENV_JSON"], "w").write(text + "\n")
PY
}

step install "$PY" -m pip install -q --no-deps --no-build-isolation -e .
if [ -n "${SRU_WHEELS:-}" ]; then
    step sru-install "$PY" -m pip install -q --no-deps --no-index --find-links "$SRU_WHEELS" "sru==2.6.0"
fi
export ENV_JSON="$OUT/environment.json"
step environment environment
step kernels-check "$PY" scripts/nvrtc_check.py check
step precompile "$PY" -c "import json, torch, parrnn; r = parrnn.precompile('cuda', dtypes=[torch.float32, \
torch.float64, torch.float16, torch.bfloat16]); print(json.dumps(r, indent=1)); raise SystemExit(not all(ok for ok, _ in r.values()))"
step pytest-gpu "$PY" -m pytest -m gpu -q -ra --maxfail=10 -p no:cacheprovider \
    --junitxml="$OUT/pytest-gpu.xml"

if SAN=$(find_sanitizer); then
    step memcheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" --tool memcheck --error-exitcode 1 \
        --leak-check no "$PY" benchmarks/sanitize_sru.py
    step racecheck env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SAN" --tool racecheck --error-exitcode 1 \
        "$PY" benchmarks/sanitize_sru.py
else
    SUMMARY+=("$(printf '%-18s SKIP  (compute-sanitizer not found)' sanitizer)")
fi

step kernel-bandwidth "$PY" benchmarks/kernel_bandwidth.py --dtype float32 bfloat16 --prefetch 1 2 4 \
    --out "$OUT/kernel_bandwidth.json"
if [ "${SKIP_BENCH:-0}" != 1 ]; then
    step benchmark "$PY" -m parrnn.experiments.bench.bench_command --device cuda --preset gpu --out "$OUT"
fi

{
    echo
    echo "==== parrnn GPU check: $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
    echo "==== results: $OUT"
    printf '%s\n' "${SUMMARY[@]}"
    if [ -f "$OUT/logs/kernel-bandwidth.log" ]; then
        echo "---- kernel bandwidth (fraction of device copy)"
        grep -E '^ *[0-9]|copy' "$OUT/logs/kernel-bandwidth.log" | head -40
    fi
} | tee "$OUT/summary.txt"
exit $FAILED
