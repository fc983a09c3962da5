"""Installed software versions, read without importing anything heavy: package metadata, and the
CANN toolkit's and the Ascend driver's version files.

The backends key their artifacts by these versions; the run's environment fingerprint
(harness.environment) records them.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

# Where CANN and the Ascend driver write their version files (CANN install guide); the first
# readable CANN file gives the toolkit's version.
CANN_VERSION_FILES = (
    Path("/usr/local/Ascend/ascend-toolkit/latest/version.cfg"),
    Path("/usr/local/Ascend/ascend-toolkit/latest/compiler/version.info"),
    Path("/usr/local/Ascend/ascend-toolkit/latest/ascend_toolkit_install.info"),
)
DRIVER_VERSION_FILE = Path("/usr/local/Ascend/driver/version.info")


def installed_version(*distributions: str) -> tuple[str, str] | None:
    """``(name, version)`` of the first of ``distributions`` that is installed, or None."""
    for name in distributions:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_from_file(path: Path) -> str | None:
    """The value of the first ``...version...=VALUE`` line of a CANN / driver version file, if readable."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "version" in line.lower() and "=" in line:
            return line.split("=", 1)[1].strip()
    return None


def cann_version() -> str | None:
    """The CANN toolkit's version, from the first readable of its version files."""
    return next((v for v in map(version_from_file, CANN_VERSION_FILES) if v is not None), None)
