"""The one progress helper: a tqdm bar on stderr when someone is watching, quiet otherwise."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from tqdm import tqdm


class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...


def _enabled() -> bool:
    if os.environ.get("MZC_PROGRESS") in ("0", "off", "false"):
        return False
    if os.environ.get("MZC_PROGRESS") in ("1", "on", "true"):
        return True
    return sys.stderr.isatty()


@contextmanager
def progress(total: int, desc: str, unit: str = "img") -> Iterator[Progress]:
    """Show progress for ``total`` units of work; set MZC_PROGRESS=1/0 to force it on/off."""
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not _enabled(), file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5)
    try:
        yield bar
    finally:
        bar.close()
