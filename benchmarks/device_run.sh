#!/usr/bin/env bash
# The GPU proof kit in one command, for a GPU machine lent for a few minutes (docs/performance.md,
# "Running the GPU proof kit"). Run it in the repository root of a copy of this tree:
#
#   TORCHKIT_COMMIT=<commit> bash benchmarks/device_run.sh
#
# 1. installs torchkit from this tree into /tmp/site with pip, offline and without dependencies
#    (the machine's own torch and Triton are used); a copy of the package is the fallback;
# 2. runs benchmarks/gpu_check.py under `timeout` (its own watchdog stops it earlier, at
#    --deadline; the timeout is the last resort for a call stuck in the driver);
# 3. leaves gpu_check.json, gpu_check.md and the logs in $OUT (default ./gpu-check-out): at most
#    six files, all directly in $OUT.
#
# Environment: OUT, TORCHKIT_COMMIT (recorded in the report when the tree has no .git),
# PYTHON (default python3), GPU_CHECK_TIMEOUT (default 285 s), GPU_CHECK_ARGS (extra arguments,
# e.g. --dry-run to try this script on a machine without a GPU).
# Exit status: gpu_check.py's (0 ok, 1 a mismatch or error, 3 stopped early), 124 or 137 when
# `timeout` ended it, 10 when torchkit could not be installed.
set -u -o pipefail

out=${OUT:-gpu-check-out}
python=${PYTHON:-python3}
limit=${GPU_CHECK_TIMEOUT:-285}
site=/tmp/torchkit-site
mkdir -p "$out"
started=$(date +%s)
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/torchkit-triton-cache}

rm -rf "$site"
if ! "$python" -m pip install --no-index --no-deps --no-build-isolation --no-compile \
    --disable-pip-version-check -q --target "$site" . >"$out/install.log" 2>&1; then
    # pip could not build the package offline: copy it as pyproject.toml maps it
    # (src/torchkit, and triton_kernels/ as torchkit.kernels).
    echo "device_run: pip install failed (see install.log); copying the package instead" |
        tee -a "$out/install.log"
    rm -rf "$site" && mkdir -p "$site" &&
        cp -r src/torchkit "$site/torchkit" &&
        rm -rf "$site/torchkit/kernels" && cp -r triton_kernels "$site/torchkit/kernels" ||
        { echo "device_run: could not install torchkit"; exit 10; }
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c "import torch, triton, torchkit.kernels.conv2d_relu as k; print('device_run:',
torch.__version__, 'triton', triton.__version__, 'CUDA', torch.cuda.is_available(), k.__file__)" \
    2>&1 | tee -a "$out/install.log"
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" >"$out/nvidia-smi.txt"
echo "device_run: installed in $(($(date +%s) - started)) s; running gpu_check.py"

# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of arguments
timeout -k 5 "$limit" "$python" benchmarks/gpu_check.py --out "$out" ${GPU_CHECK_ARGS:-} 2>&1 |
    tee "$out/gpu_check.log"
status=${PIPESTATUS[0]}
echo "device_run: gpu_check.py exited with status $status after $(($(date +%s) - started)) s"
ls -l "$out"
exit "$status"
