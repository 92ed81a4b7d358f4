"""Fixtures shared by several test files."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

# The tests run on the CPU even where a GPU exists, subprocesses (torchrun, notebook kernels)
# included: every default device then resolves to the CPU, bit-equality tests do not meet
# cudnn.benchmark, and numbers compared against a CPU evaluation are not computed under GPU
# autocast. GPU checks live in benchmarks/ (gpu_session.sh). Set before torch touches CUDA.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402

import attn_lib  # noqa: E402

#: A small run that learns the synthetic task well above chance (1/8).
#: The loss sits at chance until the model finds the shape in the clutter, and how long that
#: takes varies with the seed and with the CPU's rounding: under 64 to about 190 steps over
#: five seeds on an Intel Xeon (2026-12-03); on an AMD EPYC a 256-step budget (batch 64) left
#: the run at 21 %, an escape at about step 230. Batch 32 over the same 4,096 images gives 640
#: steps in 5 epochs, more than twice the slowest escape seen, and after its escape the run
#: gains ~40 points per 128 steps, so the verdicts no longer depend on when the plateau ends.
#: A 1/16-width model keeps steps cheap.
LEARN = dict(preset="cpu", width=0.0625, limit_train=4096, limit_test=256, epochs=5,
             batch_size=32, augment="none", device="cpu")


@pytest.fixture(scope="session")
def learned(tmp_path_factory: pytest.TempPathFactory) -> attn_lib.TrainResult:
    """One reduced main-job run (vgg-att3-concat-pc on synthetic data), trained once per session."""
    run_dir = tmp_path_factory.mktemp("learn") / "run"
    return attn_lib.train("vgg-att3-concat-pc", "synthetic", out_dir=run_dir, progress=False,
                          **LEARN)


def load_script(name: str, folder: str) -> ModuleType:
    """The repository's script ``folder/name.py`` (benchmarks/, tools/) imported as the module
    ``name``; its folder goes on ``sys.path`` so that the script's imports of its siblings work."""
    where = Path(__file__).resolve().parents[1] / folder
    if str(where) not in sys.path:
        sys.path.insert(0, str(where))
    spec = importlib.util.spec_from_file_location(name, where / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
