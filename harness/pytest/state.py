"""The session's state: what ``pytest_configure`` resolved from the options and fixtures/, typed.

Set once per pytest process by :func:`harness.pytest.plugin.pytest_configure` (the controller and
every pytest-xdist worker) and read with :func:`session_state` by the plugin's hooks, the
fixtures, the results recorder and the acceptance tests. It is frozen: a test that needs another
value replaces the whole state (``monkeypatch.setitem(config.stash, STATE, replace(state, ...))``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.specs import ChipSpec, ModelSpec, Policy


@dataclass(frozen=True)
class SessionState:
    """The run's selection and settings, resolved and checked at start-up."""

    registry: Mapping[str, ModelSpec]  # every curated model, plus the library models --models named
    models: tuple[ModelSpec, ...]  # the models under test (--models; default: every curated model)
    chips: tuple[ChipSpec, ...]  # the chips under test (--chip), as --backend / --precision run them
    all_chips: Mapping[str, ChipSpec]  # every chip of fixtures/chips.toml (baseline chips included)
    policy: Policy  # fixtures/policy.toml, with --inconclusive applied
    batch_sizes: tuple[int, ...]  # the accuracy tests' batch sizes: --batch-sizes, else the policy's
    explicit_batch_sizes: tuple[int, ...] | None  # --batch-sizes as given; None: each model's perf sweep
    device_ids: tuple[int, ...]  # --device-ids (default 0)
    localize: bool  # --localize-on-fail (default) / --no-localize
    localize_dir: Path  # --localize-dir, default <report-dir>/localize, under the rootdir when relative


STATE = pytest.StashKey[SessionState]()


def session_state(config: pytest.Config) -> SessionState:
    """The session's :class:`SessionState`."""
    try:
        return config.stash[STATE]
    except KeyError:
        raise HarnessError("no modelzoo-cert session state: harness.pytest.plugin's pytest_configure has not run "
                           "in this pytest process (is the plugin loaded? conftest.py: pytest_plugins = "
                           "['harness.pytest.plugin'])") from None
