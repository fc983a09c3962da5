"""vulture's whitelist (pyproject.toml [tool.vulture], run by scripts/lint.sh): names in harness/ that are
used, but not where vulture can see it. Only what is used dynamically belongs here, each with who uses it.
vulture reads this file; nothing imports or runs it.
"""

from typing import Any

_: Any = None

# harness/data/coverage.py, _label_file_digest(path, size, mtime_ns): functools.lru_cache keys the digest
# by its arguments, so an edited label file (a new size or mtime) is read again; the body never reads it.
_.mtime_ns  # noqa: B018

# harness/pytest/hookspec.py, pytest_mzc_session_finished(config, results_path, exitstatus): a hook
# specification has no body; pluggy calls a lab's implementations with its arguments by name.
_.results_path  # noqa: B018
