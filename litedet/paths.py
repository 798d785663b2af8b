"""Where litedet keeps what it makes once and reuses: the cache folder.

`$LITEDET_CACHE` if set, else `~/.cache/litedet`. It holds the generated sample datasets
(`datasets/`) and the tests' client virtualenvs (`venvs/`). Nothing in it is precious: delete it
and it is made again.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LITEDET_CACHE"


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "litedet"
