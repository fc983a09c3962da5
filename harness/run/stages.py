"""Where a run's wall time goes: a stage clock the workbench charges, written as ``stages.json``.

``with clock.stage("inference"): ...`` adds the block's wall seconds and one call to the stage
``inference``. Rules:

- **Innermost stage pays.** A stage entered inside another pauses the outer one: the outer
  stage is charged only for the time outside its nested stages, so the stages of one thread
  never count a second twice and their sum is at most that thread's wall time.
- **Per thread.** Each thread nests on its own stack; the totals are shared (under a lock). Two
  threads in stages at the same time are both charged, so with concurrent stages the sum can
  exceed the elapsed time. The workbench enters every stage on the calling thread (a batch's
  prefetch thread runs inside the caller's ``inference`` stage and is not a stage of its own).
- **Calls** count entries: a stage entered inside itself counts twice, its time once.
- A stage still running is not in :meth:`StageClock.totals` until it ends.

The stages the workbench charges (harness.run.workbench): ``listing``, ``preprocessing``,
``model`` (weights and torch module), ``export``, ``compile`` (backend set-up and the cached
compile), ``session`` (opening the compiled model), ``inference`` (backend session runs),
``reference`` (torch reference logits: key, cache lookup or torch run), ``scoring``.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.cache import atomic_write_bytes

STAGES_FORMAT = 1
# The workbench's stages, in the order a run meets them (harness.run.workbench).
STAGES = ("listing", "preprocessing", "model", "export", "compile", "session", "inference", "reference", "scoring")


class StageClock:
    """Wall seconds and entry counts per stage name; thread-safe, innermost stage pays."""

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self._timer = timer  # seconds; injectable for tests
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = defaultdict(float)
        self._calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()

    def _stack(self) -> list[list[Any]]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def _charge(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] += seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Charge the block's wall time (minus nested stages) and one call to ``name``."""
        stack = self._stack()
        now = self._timer()
        if stack:  # pause the enclosing stage: charge it up to here
            outer = stack[-1]
            self._charge(outer[0], now - outer[1])
        frame: list[Any] = [name, now]  # [stage name, entered or resumed at]
        stack.append(frame)
        with self._lock:
            self._calls[name] += 1
        try:
            yield
        finally:
            now = self._timer()
            stack.pop()
            self._charge(name, now - frame[1])
            if stack:  # resume the enclosing stage from here
                stack[-1][1] = now

    def totals(self) -> dict[str, dict[str, float | int]]:
        """``{stage: {"seconds": s, "calls": n}}`` of every finished stage entry so far."""
        with self._lock:
            names = list(self._calls)
            return {n: {"seconds": self._seconds.get(n, 0.0), "calls": self._calls[n]} for n in names}

    def seconds(self, name: str) -> float:
        with self._lock:
            return self._seconds.get(name, 0.0)

    def calls(self, name: str) -> int:
        with self._lock:
            return self._calls.get(name, 0)


def stages_document(clock: StageClock, **facts: Any) -> dict[str, Any]:
    """The JSON of ``stages.json``: the totals (seconds rounded to the microsecond) and ``facts``."""
    totals = {name: {"seconds": round(float(t["seconds"]), 6), "calls": int(t["calls"])}
              for name, t in clock.totals().items()}
    return {"format": STAGES_FORMAT, **facts, "stages": totals}


def write_stages(path: Path, clock: StageClock, **facts: Any) -> Path:
    """Write :func:`stages_document` to ``path`` atomically (readers see the old file or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(stages_document(clock, **facts), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode())
    return path

