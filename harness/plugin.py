"""pytest plugin: options, markers and parametrization (expanded by the foundation work)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("modelzoo-cert")
    group.addoption("--imagenet", default=None, help="ImageNet val dir (JPEGs + val_label.txt)")
