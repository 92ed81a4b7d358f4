# Sourced by the GPU scripts: print_machine PYTHON prints the GPU (or that there is none) and
# the Python, torch, torchvision, CUDA and cuDNN versions, so every log says what it ran on.
print_machine() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
    else
        echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
    fi
    "$1" -c "import sys, torch, torchvision; print('python', sys.version.split()[0], \
'| torch', torch.__version__, '| torchvision', torchvision.__version__, \
'| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version())"
}
