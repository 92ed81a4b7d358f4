#!/usr/bin/env bash
# The GPU command, on a fresh CUDA machine with the repository's working tree (and .data/):
#
#   bash benchmarks/gpu_run.sh [--budget SECONDS] [--steps notebook weights study speed]
#   bash benchmarks/gpu_run.sh --dry-run       # every step, tiny, on the CPU
#
# Extracts .data/cifar10-jpeg75.tar.gz when .data/train is missing, installs the notebook
# step's packages from the wheels in .whl/ when they are missing and the folder exists (the
# machine has no internet), prints the card and versions, then runs benchmarks/gpu_run.py:
# notebook 03 on the GPU, the width-1/4 weights, the full-width study run by run, the speed
# tries -- each unit skipped when its result is in the repository or its estimate does not fit
# in the budget. Results land in $OUT (default runs/gpu-run) with this log (gpu_run.log);
# `python tools/merge_gpu_results.py DIR` puts them into the repository. See docs/GPU.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu-run}"
mkdir -p "$out"
dry_run=0
for arg in "$@"; do
    if [ "$arg" = "--dry-run" ]; then dry_run=1; fi
done
python="${PYTHON:-python3}"
if [ "$dry_run" = 0 ] && [ ! -d .data/train ]; then
    tar -xzf .data/cifar10-jpeg75.tar.gz -C .data
fi
needed="nbclient nbformat ipykernel matplotlib_inline tqdm matplotlib"
if ! "$python" -c "import ${needed// /, }" 2>/dev/null && [ -d .whl ]; then
    "$python" -m pip install --quiet --no-index --find-links .whl \
        nbclient nbformat ipykernel matplotlib-inline tqdm matplotlib \
        || echo "warning: installing from .whl/ failed; the notebook step may fail"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Progress bars every 10 s at most: the log comes back and must stay small.
export TQDM_MININTERVAL=10
. benchmarks/machine_info.sh  # the working directory is the repository root (cd above)
{
    print_machine "$python"
    "$python" benchmarks/gpu_run.py --out "$out" "$@"
} 2>&1 | tee "$out/gpu_run.log"
