#!/usr/bin/env bash
# The GPU checks, as one script for a machine with a CUDA device and CuPy (a device session:
# see benchmarks/README.md, "GPU checks"). In order of what matters most, each step time-boxed so
# that a slow one cannot starve the next:
#   1. the DIA tests (tests/dia) with a GPU present: the `gpu` marker (GPU and CPU fits agree far
#      inside the noise), and every pipeline test, the GalSim Roman accuracy test among them,
#      with backend 'auto', i.e. on the GPU there (about 5 minutes on an H200 machine);
#   2. one whole 4088^2 pair on the GPU (three in one process), then on the CPU of the same
#      machine for the ratio (benchmarks/photometry_stages.py --backend);
#   3. photometry quality on GalSim Roman scenes with the GPU (benchmarks/roman_quality.py).
# Logs go to $OUT (default /tmp/gpu_check). Missing Python packages are taken from wheels in
# .whl/ (and .whl/galsim-site.tar.xz, a stripped GalSim) when that folder exists.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    [ -f .whl/galsim-site.tar.xz ] && tar xJf .whl/galsim-site.tar.xz -C /tmp/site
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi -L
$PY - <<'EOF'
import cupy, numba, numpy, scipy
from orchestrator.dia import gpu
print("cupy", cupy.__version__, "numba", numba.__version__, "numpy", numpy.__version__,
      "scipy", scipy.__version__, "gpu.available()", gpu.available())
EOF

step() {  # step NAME SECONDS COMMAND...: run, log to $OUT/NAME.log, report the exit code
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc=$rc in $((SECONDS - t0)) s"
    tail -n 25 "$OUT/$name.log"
}

step tests "${GPU_CHECK_TESTS_S:-360}" $PY -m pytest -p no:cacheprovider -q -rs --durations=8 tests/dia
step stages_gpu "${GPU_CHECK_STAGES_S:-120}" $PY benchmarks/photometry_stages.py --no-peer \
    --backend gpu --repeat 3 --data /tmp/stages4088
step stages_cpu "${GPU_CHECK_STAGES_S:-120}" $PY benchmarks/photometry_stages.py --no-peer \
    --backend cpu --data /tmp/stages4088
step quality "${GPU_CHECK_QUALITY_S:-150}" $PY benchmarks/roman_quality.py --seeds 0 1 2 3 \
    --modes files --nprocs 4 --workdir /tmp/rq_gpu
