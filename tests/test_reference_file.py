"""The torch reference logits as a file (harness.run.reference, ``python -m harness reference``):
exported from one cache, imported into a fresh one, found there by the next run without running
torch, on a copy of the images with other paths and mtimes; bad files refused, nothing written."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_workbench import tiny_workbench

from harness.__main__ import main as harness_main
from harness.cache import ArtifactCache
from harness.errors import UsageError
from harness.run import reference as reference_mod
from harness.run.reference import (
    INDEX,
    REFERENCE_KIND,
    ReferenceFileError,
    export_references,
    import_references,
    read_reference_file,
)

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The machine that computed the reference: a cache with one entry, and its exported file."""
    root = tmp_path_factory.mktemp("origin")
    bench, spec, chip = tiny_workbench(root / "cache")
    ev = bench.evaluate(spec, chip, 4, "embedded")
    out = root / "reference.zip"
    written = export_references(bench.cache, out, ["tiny"])
    return {"bench": bench, "spec": spec, "chip": chip, "ev": ev, "file": out, "written": written,
            "images": ev.prepared.listing.image_dir}


def no_torch_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make computing a whole reference fail: a run that finds it in the cache never gets there
    (checking a found one recomputes a sample of its images, not the whole run)."""

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the torch reference was computed, not found in the cache")

    monkeypatch.setattr(reference_mod, "run_all", refused)


def copy_images(src: Path, dst: Path) -> Path:
    """The images at another path with new mtimes (shutil.copy keeps no times): another machine's copy."""
    shutil.copytree(src, dst, copy_function=shutil.copy)
    return dst


def test_the_file_holds_the_logits_their_key_inputs_and_a_checksum(origin: dict[str, Any]) -> None:
    index, entries = read_reference_file(origin["file"])
    assert index["format"] == "modelzoo-cert reference-logits" and index["version"] == 1
    [entry] = entries
    assert entry.model == "tiny" and entry.key == origin["written"][0].key
    assert np.array_equal(entry.logits, origin["ev"].reference_logits)
    assert set(entry.inputs) == {"format", "arch", "num_classes", "weights", "images", "normalize"}
    assert "torch" not in entry.inputs and "source" not in entry.inputs["weights"]  # nothing machine-specific
    assert entry.origin["torch"] and entry.origin["computed_host"]
    with zipfile.ZipFile(origin["file"]) as zf:
        item = json.loads(zf.read(INDEX))["entries"][0]
        assert len(item["sha256"]) == 64 and item["shape"] == [8, 1000]


def test_imported_on_a_fresh_cache_the_next_run_finds_it_without_running_torch(
        origin: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    [(item, written)] = import_references(cache, origin["file"])
    assert written
    # another machine: the same images at another path, other mtimes, so another dataset key
    images = copy_images(origin["images"], tmp_path / "imagenet")
    bench, spec, chip = tiny_workbench(tmp_path / "cache", imagenet=images)
    no_torch_run(monkeypatch)
    ev = bench.evaluate(spec, chip, 4, "imagenet")
    assert ev.dataset_key != origin["ev"].dataset_key
    assert np.array_equal(ev.reference_logits, origin["ev"].reference_logits)
    assert bench.clock.calls("reference") == 1
    assert ev.reference_origin is not None
    assert ev.reference_origin["imported_from"]["file"] == str(origin["file"].resolve())
    assert ev.reference_origin["torch"] == item.origin["torch"]
    assert ev.reference_origin["origin"] == "imported"
    check = ev.reference_origin["check"]
    assert check.passed and check.images == 8 and check.max_rel_diff <= check.rtol


def test_without_the_import_a_fresh_cache_computes_it(origin: dict[str, Any], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The control of the test above: the same run on a fresh cache without the import does run torch."""
    images = copy_images(origin["images"], tmp_path / "imagenet")
    bench, spec, chip = tiny_workbench(tmp_path / "cache", imagenet=images)
    no_torch_run(monkeypatch)
    with pytest.raises(AssertionError, match="the torch reference was computed"):
        bench.evaluate(spec, chip, 4, "imagenet")


def test_another_torch_version_reuses_the_reference(origin: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch version is recorded, not keyed: a machine with another torch finds the entry."""
    bench, spec = origin["bench"], origin["spec"]
    monkeypatch.setattr(reference_mod, "torch_version", lambda: "0.0.0-another")
    no_torch_run(monkeypatch)
    loaded = bench.model(spec, calibration_source="embedded")
    logits = bench.reference(loaded, origin["ev"].prepared)[0]
    assert np.array_equal(logits, origin["ev"].reference_logits)


def test_importing_twice_keeps_the_entry(origin: dict[str, Any], tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    assert [w for _, w in import_references(cache, origin["file"])] == [True]
    assert [w for _, w in import_references(cache, origin["file"])] == [False]
    assert len([p for p in (cache.root / REFERENCE_KIND).iterdir() if p.is_dir()]) == 1


# -- files that are refused -----------------------------------------------------------------


def rewrite(src: Path, dst: Path, change: Any) -> Path:
    """``src`` with ``change(index, members)`` applied (members: name -> bytes), as a new zip."""
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    index = json.loads(members.pop(INDEX))
    change(index, members)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
        zf.writestr(INDEX, json.dumps(index))
    return dst


def refused(path: Path, tmp_path: Path, match: str) -> None:
    cache = ArtifactCache(tmp_path / "fresh")
    with pytest.raises(ReferenceFileError, match=match):
        import_references(cache, path)
    assert not (cache.root / REFERENCE_KIND).exists()  # nothing written
    assert issubclass(ReferenceFileError, UsageError)


def test_a_wrong_checksum_is_refused(origin: dict[str, Any], tmp_path: Path) -> None:
    def flip_a_logit(index: dict[str, Any], members: dict[str, bytes]) -> None:
        name = index["entries"][0]["member"]
        blob = bytearray(members[name])
        blob[-1] ^= 0xFF  # the last byte of the last logit
        members[name] = bytes(blob)

    refused(rewrite(origin["file"], tmp_path / "flipped.zip", flip_a_logit), tmp_path, "checksum mismatch")


def test_a_wrong_shape_is_refused_even_with_its_own_checksum(origin: dict[str, Any], tmp_path: Path) -> None:
    def drop_an_image(index: dict[str, Any], members: dict[str, bytes]) -> None:
        item = index["entries"][0]
        logits = np.load(io.BytesIO(members[item["member"]]))
        buf = io.BytesIO()
        np.save(buf, logits[:-1])
        members[item["member"]] = buf.getvalue()
        item["sha256"] = __import__("hashlib").sha256(buf.getvalue()).hexdigest()

    refused(
        rewrite(origin["file"], tmp_path / "short.zip", drop_an_image),
        tmp_path,
        r"shape \(7, 1000\).*expected \(8, 1000\)",
    )


def test_altered_key_inputs_are_refused(origin: dict[str, Any], tmp_path: Path) -> None:
    def other_weights(index: dict[str, Any], members: dict[str, bytes]) -> None:
        index["entries"][0]["inputs"]["weights"]["seed"] = 12345

    refused(rewrite(origin["file"], tmp_path / "altered.zip", other_weights), tmp_path, "key does not match its inputs")


def test_one_bad_entry_refuses_the_whole_file(origin: dict[str, Any], tmp_path: Path) -> None:
    def add_a_truncated_copy(index: dict[str, Any], members: dict[str, bytes]) -> None:
        first = index["entries"][0]
        item = dict(first, member="copy.npy")
        members["copy.npy"] = members[first["member"]][:-40]
        index["entries"].append(item)

    refused(rewrite(origin["file"], tmp_path / "two.zip", add_a_truncated_copy), tmp_path, "checksum mismatch")


@pytest.mark.parametrize("content, match", [
    (b"", "not a reference-logits file"),
    (b"\x93NUMPY garbage, not a zip", "not a reference-logits file"),
    ("truncated", "not a reference-logits file"),
])
def test_a_corrupt_file_is_refused(origin: dict[str, Any], tmp_path: Path, content: Any, match: str) -> None:
    path = tmp_path / "bad.zip"
    path.write_bytes(origin["file"].read_bytes()[: len(origin["file"].read_bytes()) // 2] if content == "truncated"
                     else content)
    refused(path, tmp_path, match)


def test_a_file_of_another_format_is_refused(origin: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("weights.pth", b"not ours")
    refused(other, tmp_path, f"not a reference-logits file.*no {INDEX}")
    renamed = rewrite(origin["file"], tmp_path / "renamed.zip", lambda index, _m: index.update(format="something else"))
    refused(renamed, tmp_path, "not a reference-logits file.*format 'something else'")
    newer = rewrite(origin["file"], tmp_path / "newer.zip", lambda index, _m: index.update(version=2))
    refused(newer, tmp_path, "version 2")


# -- the command ----------------------------------------------------------------------------


def test_the_command_exports_and_imports(
    origin: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.zip"
    source = str(origin["bench"].cache.root)
    assert harness_main(["reference", "export", "--model", "tiny", "--out", str(out), "--cache-dir", source]) == 0
    assert "exported tiny (8 images" in capsys.readouterr().out
    assert harness_main(["reference", "import", str(out), "--cache-dir", str(tmp_path / "fresh")]) == 0
    assert "imported: tiny (8 images" in capsys.readouterr().out
    assert harness_main(["reference", "import", str(out), "--cache-dir", str(tmp_path / "fresh")]) == 0
    assert "already in the cache, kept: tiny" in capsys.readouterr().out


def test_the_command_says_what_is_wrong_in_one_line(origin: dict[str, Any], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    source = str(origin["bench"].cache.root)
    assert harness_main(["reference", "export", "--model", "nosuch", "--out", str(tmp_path / "x.zip"),
                         "--cache-dir", source]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("python -m harness reference: error: no torch reference logits of nosuch")
        and "cached: tiny" in err
    )
    bad = tmp_path / "bad.zip"
    bad.write_text("{}")
    assert harness_main(["reference", "import", str(bad), "--cache-dir", str(tmp_path / "fresh")]) == 2
    assert "not a reference-logits file" in capsys.readouterr().err
    assert harness_main(["reference", "import", str(tmp_path / "absent.zip")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_accuracy_record_says_who_computed_the_reference_and_from_which_file() -> None:
    from acceptance._records import reference_computed

    here = {"torch": "2.14.1", "computed_host": "vm", "computed_at": "2026-11-30T14:00:00+0000", "imported_from": None}
    assert reference_computed(here) == "torch 2.14.1 on vm at 2026-11-30T14:00:00+0000"
    imported = {**here, "computed_host": "lab", "imported_from": {"file": "/r/ref.zip", "file_sha256": "ab",
                                                                 "exported_host": "lab", "exported_at": "2026-11-29"}}
    assert reference_computed(imported) == ("torch 2.14.1 on lab at 2026-11-30T14:00:00+0000; imported from /r/ref.zip "
                                            "(exported on lab at 2026-11-29)")
    assert reference_computed(None) is None


# -- a reference entry edited in the cache (issue 24) ----------------------------------------


def edited_entry(tmp_path: Path, seal: bool) -> tuple[Any, Any, Any, Path]:
    """A cache whose reference entry's logits were changed after a run; ``seal``: and its manifest's
    checksums recomputed, as someone who knows the format would."""
    from harness.cache_verify import describe_files, sealed

    bench, spec, chip = tiny_workbench(tmp_path / "cache")
    ev = bench.evaluate(spec, chip, 4, "embedded")
    [entry] = [p for p in (tmp_path / "cache" / REFERENCE_KIND).iterdir() if p.is_dir() and not p.name.startswith(".")]
    logits = np.load(entry / "logits.npy")
    np.save(entry / "logits.npy", logits[::-1].copy())  # rows swapped: another image's logits each
    if seal:
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest.pop("manifest_sha256")
        manifest["files"] = describe_files(entry)[0]
        manifest["files"].pop("manifest.json", None)
        (entry / "manifest.json").write_text(json.dumps(sealed(manifest)))
    return ev, spec, chip, entry


def test_reference_logits_edited_in_the_cache_are_rebuilt_not_used(tmp_path: Path) -> None:
    ev, spec, chip, entry = edited_entry(tmp_path, seal=False)
    bench, spec, chip = tiny_workbench(tmp_path / "cache")  # the next run
    from harness.cache import CacheEntryRebuilt

    with pytest.warns(CacheEntryRebuilt, match=str(entry)):
        again = bench.evaluate(spec, chip, 4, "embedded")
    assert np.array_equal(again.reference_logits, ev.reference_logits)
    assert again.reference_origin is not None and again.reference_origin["origin"] == "computed here"


def test_reference_logits_edited_with_their_checksums_recomputed_are_refused(tmp_path: Path) -> None:
    from harness.run.reference import ReferenceMismatch

    _ev, _spec, _chip, entry = edited_entry(tmp_path, seal=True)
    bench, spec, chip = tiny_workbench(tmp_path / "cache")
    with pytest.raises(ReferenceMismatch, match="reference refused: the cached reference") as err:
        bench.evaluate(spec, chip, 4, "embedded")
    assert str(entry) in str(err.value) and "delete that directory" in str(err.value)


def test_truncated_reference_logits_are_rebuilt_not_a_numpy_error(tmp_path: Path) -> None:
    from harness.cache import CacheEntryRebuilt

    bench, spec, chip = tiny_workbench(tmp_path / "cache")
    ev = bench.evaluate(spec, chip, 4, "embedded")
    [entry] = [p for p in (tmp_path / "cache" / REFERENCE_KIND).iterdir() if p.is_dir() and not p.name.startswith(".")]
    blob = (entry / "logits.npy").read_bytes()
    (entry / "logits.npy").write_bytes(blob[: len(blob) // 2])
    bench, spec, chip = tiny_workbench(tmp_path / "cache")
    with pytest.warns(CacheEntryRebuilt, match="logits.npy"):
        again = bench.evaluate(spec, chip, 4, "embedded")
    assert np.array_equal(again.reference_logits, ev.reference_logits)
