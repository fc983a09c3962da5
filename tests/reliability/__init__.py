"""Reliability tests: bad inputs, interruptions, concurrency, full disks, fuzzing (docs/reliability.md)."""
