"""``python -m attn_lib``: see :mod:`attn_lib.cli`."""

from .cli import main

raise SystemExit(main())
