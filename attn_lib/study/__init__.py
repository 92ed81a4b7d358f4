"""The paper's comparison, reproduced: models x seeds at a scale, with FGSM, PGD and a g probe.

    >>> import attn_lib
    >>> attn_lib.reproduce("cifar10", scale="cpu", data_dir=".data")

or ``python -m attn_lib reproduce --scale cpu --data-dir .data``.

* :mod:`.scales` -- what each scale trains (``cpu``, ``gpu``, ``paper``, ``smoke``) and the
  reference numbers the results are shown beside;
* :mod:`.runner` -- :func:`reproduce`: train, resume and evaluate every run;
* :mod:`.robustness` -- FGSM and PGD accuracy, and accuracy with ``g`` shuffled across the batch;
* :mod:`.report` -- ``results.json``, ``RESULTS.md`` and the figures.
"""

from .robustness import (
    EPSILONS,
    fgsm_accuracy,
    fgsm_perturb,
    global_shuffle_effect,
    pgd_accuracy,
    pgd_perturb,
)
from .runner import StudyResult, reproduce
from .scales import SCALES, get_scale

__all__ = [
    "EPSILONS",
    "SCALES",
    "StudyResult",
    "fgsm_accuracy",
    "fgsm_perturb",
    "get_scale",
    "global_shuffle_effect",
    "pgd_accuracy",
    "pgd_perturb",
    "reproduce",
]
