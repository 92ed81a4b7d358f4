"""Process-wide settings read from the environment, in one place.

``ATTN_LIB_SMOKE=1`` switches the notebooks (and anything else that asks) to a fast mode: a
narrow model, a tiny offline subset and a few steps, so that CI can execute every notebook on
two CPU cores in minutes. It is read here and nowhere else.
"""

from __future__ import annotations

import os

SMOKE_ENV_VAR = "ATTN_LIB_SMOKE"

_TRUE_VALUES = {"1", "true", "yes", "on"}


def smoke_mode() -> bool:
    """Return True when ``ATTN_LIB_SMOKE`` asks for the fast CI mode (``1``/``true``/``yes``)."""
    return os.environ.get(SMOKE_ENV_VAR, "").strip().lower() in _TRUE_VALUES
