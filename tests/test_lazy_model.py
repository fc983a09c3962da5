"""A warm run builds no torch module it does not run (harness.run.workbench.LoadedModel): the weights
are identified at once (a checkpoint verified, a seed and its calibration hashed), the module is
built where torch runs: an export, computing a reference, or checking a cached one."""

from __future__ import annotations

from pathlib import Path

from tests.tiny_workbench import tiny_workbench


def test_a_cached_export_and_compile_build_no_module_and_a_cached_reference_builds_it_to_check(
    tmp_path: Path, modules_built: list[str]
) -> None:
    built = modules_built
    cold, spec, chip = tiny_workbench(tmp_path / "cache")
    first = cold.compile(spec, chip, 4, "embedded")
    cold.reference(first.loaded, cold.dataset(spec, "embedded"))
    assert built == ["tiny"]  # one module for the export and the reference

    warm, _, _ = tiny_workbench(tmp_path / "cache")
    again = warm.compile(spec, chip, 4, "embedded")
    assert again.artifact == first.artifact and again.loaded.weights == first.loaded.weights
    assert built == ["tiny"]  # cached export, cached compile: no module
    _, origin = warm.reference(again.loaded, warm.dataset(spec, "embedded"))
    assert origin["origin"] == "cached" and origin["check"].passed
    assert built == ["tiny", "tiny"]  # a cached reference is checked against torch run here
    warm.reference(again.loaded, warm.dataset(spec, "embedded"))
    assert built == ["tiny", "tiny"]  # once a session
