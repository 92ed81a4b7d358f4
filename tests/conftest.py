"""Fixtures shared by several test files."""

from __future__ import annotations

import os

# The tests run on the CPU even where a GPU exists, subprocesses (torchrun, notebook kernels)
# included: every default device then resolves to the CPU, bit-equality tests do not meet
# cudnn.benchmark, and numbers compared against a CPU evaluation are not computed under GPU
# autocast. GPU checks live in benchmarks/ (gpu_session.sh). Set before torch touches CUDA.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest  # noqa: E402

import attn_lib  # noqa: E402

#: A small run that learns the synthetic task well above chance (1/8): ~30-45 s on 2 cores.
#: The loss sits at chance for the first ~100 steps (the shape must be found in the clutter),
#: so fewer steps would make the tests that use it flaky; a 1/16-width model keeps steps cheap.
LEARN = dict(preset="cpu", width=0.0625, limit_train=4096, limit_test=256, epochs=4,
             augment="none", device="cpu")


@pytest.fixture(scope="session")
def learned(tmp_path_factory: pytest.TempPathFactory) -> attn_lib.TrainResult:
    """One reduced main-job run (vgg-att3-concat-pc on synthetic data), trained once per session."""
    run_dir = tmp_path_factory.mktemp("learn") / "run"
    return attn_lib.train("vgg-att3-concat-pc", "synthetic", out_dir=run_dir, progress=False,
                          **LEARN)
