#!/usr/bin/env bash
# The wheels the GPU command's notebook step needs, for a GPU machine without internet:
#
#   bash benchmarks/fetch_wheels.sh [PYTHON_VERSION]     # default 3.12 (the last GPU machine's)
#
# Downloads nbclient, nbformat, ipykernel, matplotlib and tqdm with their dependencies as
# manylinux x86-64 wheels into .whl/ (ignored by git), less numpy and pillow, which the
# machine's torchvision brings: about 33 MB (2026-12-03), so that .whl/ and
# .data/cifar10-jpeg75.tar.gz (19 MB) travel together within 64 MiB. benchmarks/gpu_run.sh
# installs from .whl/ only what the machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
python="${PYTHON:-python3}"
"$python" -m pip download --quiet --only-binary=:all: --implementation cp \
    --python-version "$version" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d .whl nbclient nbformat ipykernel matplotlib-inline matplotlib tqdm
rm -f .whl/numpy-*.whl .whl/pillow-*.whl
du -sh .whl
