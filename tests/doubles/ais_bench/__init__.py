"""TEST DOUBLE of Ascend's ais_bench (see tests/doubles/README.md). Not the real package."""

__version__ = "0.0.0+test-double"
