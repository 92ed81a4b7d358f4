#!/usr/bin/env bash
# The whole GPU check of the training targets in one command, for a session lent a GPU:
#
#   here:   mkdir -p .data && cp ../shared/data/cifar10-jpeg75.tar.gz .data/
#   device: run(command="bash benchmarks/gpu_session.sh", carry=[".data/cifar10-jpeg75.tar.gz"],
#               timeout_s=540)
#
# It extracts the JPEG CIFAR-10 tarball (ignored .data/, never committed) if needed, prints the
# card and versions, and runs benchmarks/bench_train.py (throughput eager + compiled, the
# reference-style loop, peak memory, time to 93 % with the fast preset; about 5 minutes on one
# H100 by estimate). Extra arguments go to bench_train.py (e.g. --lr 0.3 --epochs 60); a
# second call with --no-throughput tries another recipe in about 4 minutes on the warm machine.
# The log and a JSON of the figures land in $OUT (the device tool's return folder) or ./runs.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs}"
mkdir -p "$out"
if [ ! -d .data/train ]; then
    tar -xzf .data/cifar10-jpeg75.tar.gz -C .data
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
    "$python" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], \
'| torch', torch.__version__, '| torchvision', torchvision.__version__)"
    "$python" benchmarks/bench_train.py --json "$out/bench.json" "$@"
} 2>&1 | tee "$out/bench.log"
