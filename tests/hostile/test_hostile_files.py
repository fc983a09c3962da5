"""Hostile files (issue 25): each bomb is a real small file, refused with the suite's own error
naming it before it can cost memory, and the peak memory of reading it, measured in a fresh
process, stays far below what it asks for (a hang detector with a generous bound, not a speed
check). Then property tests: whatever bytes the guarded readers get, they answer with a result or
an error of the suite's family, never another exception.

The bombs, as found: a 102-byte 8000x1 PNG named ``.JPEG`` took 5.0 GB to preprocess (60000x1:
~38 GB), a 2 MB reference zip with a 2 GiB member 4.2 GB, a 192-byte ``.npy`` whose header claims
3.6 TiB a ``MemoryError``; JSON nested 100,000 deep or holding a 5000-digit integer crashed the
reader; complex, datetime and string logits were accepted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from harness.cache import ArtifactCache, content_key
from harness.data import DataError, list_dataset, prepare_dataset, preprocess_image
from harness.data.transforms import decode_bytes
from harness.errors import HarnessError
from harness.judge.predictions import PredictionsError, _load_values, read_result_json
from harness.run.reference import ReferenceFileError, read_reference_file
from harness.safe_load import (
    JsonSyntaxError,
    UntrustedInput,
    load_json_text,
    read_npy,
)
from harness.specs import PreprocessSpec, SpecError, load_policy

SPEC = PreprocessSpec(resize=256, crop=224)
ROOT = Path(__file__).resolve().parents[2]
# Peak memory a refused bomb may add to the process reading it: far below what any bomb asks for
# (GBs), far above what a check costs (a few MB).
PEAK_BOUND_MB = 500
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])


# --------------------------------------------------------------------------------------------
# Peak memory of one call, in a fresh process


_CHILD = """
import json, re, resource, sys
sys.path.insert(0, {root!r})

def status(key):
    return int(re.search(key + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))

{imports}
# A regression must fail here with a MemoryError, not make the machine swap: 3 GB of address space
# beyond what the imports took.
resource.setrlimit(resource.RLIMIT_AS, ((status("VmSize") + 3 * 1024 * 1024) * 1024,) * 2)
try:
    open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) starts again from here
except OSError:
    pass
base = status("VmRSS")
try:
    {call}
    outcome = "returned"
except BaseException as exc:
    outcome = f"{{type(exc).__module__}}.{{type(exc).__name__}}: {{exc}}"
print(json.dumps({{"outcome": outcome, "peak_mb": (status("VmHWM") - base) / 1024, "base_mb": base / 1024}}))
"""


def peak_of(imports: str, call: str) -> dict[str, Any]:
    """Run ``call`` after ``imports`` in a fresh interpreter: its outcome and the peak RSS it added."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc/self/status (Linux)")
    code = _CHILD.format(root=str(ROOT), imports=textwrap.dedent(imports), call=call)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"peak +{result['peak_mb']:.1f} MB over {result['base_mb']:.0f} MB: {result['outcome'][:200]}")
    return result


def assert_bounded(result: dict[str, Any], error: str, *fragments: str) -> None:
    assert result["outcome"].startswith(error), result["outcome"]
    for fragment in fragments:
        assert fragment in result["outcome"], (fragment, result["outcome"])
    assert result["peak_mb"] < PEAK_BOUND_MB, result


# --------------------------------------------------------------------------------------------
# Images


def imagenet_folder(root: Path, bombs: dict[str, Callable[[Path], None]]) -> Path:
    """A small ModelZoo-layout folder: three honest photos-to-be and the ``bombs`` (name -> writer)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(3):
        name = f"ILSVRC2012_val_0000000{i + 1}.JPEG"
        Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 64, 3), np.uint8)).save(root / name, "JPEG")
        names.append(name)
    for name, write in bombs.items():
        write(root / name)
        names.append(name)
    (root / "val_label.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(sorted(names))))
    return root


def wide_png(width: int, height: int = 1) -> Callable[[Path], None]:
    """A PNG of ``width x height`` black pixels, whatever the file is named (~100 bytes)."""
    return lambda path: Image.new("RGB", (width, height)).save(path, "PNG")


def declared_png(width: int, height: int) -> Callable[[Path], None]:
    """A PNG whose header declares ``width x height`` over one row of data (PIL's bomb check)."""
    import struct
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    def write(path: Path) -> None:
        header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
        body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4)) + chunk(b"IEND", b"")
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return write


BOMBS = {"8000x1": (8000, 1), "60000x1": (60000, 1), "1x60000": (1, 60000)}


@pytest.mark.parametrize("shape", sorted(BOMBS))
def test_a_thin_png_named_jpeg_is_refused_before_decoding_with_bounded_memory(tmp_path: Path, shape: str) -> None:
    w, h = BOMBS[shape]
    folder = imagenet_folder(tmp_path / "imagenet", {"ILSVRC2012_val_00000009.JPEG": wide_png(w, h)})
    bomb = folder / "ILSVRC2012_val_00000009.JPEG"
    assert bomb.stat().st_size < 400  # ~100 bytes wide, ~300 tall (a filter byte per row)
    budget = load_policy().data.decode_memory_mb
    result = peak_of(
        "from pathlib import Path\nfrom harness.cache import ArtifactCache\n"
        "from harness.data import list_dataset, prepare_dataset\nfrom harness.specs import PreprocessSpec, load_policy",
        f"prepare_dataset(list_dataset(Path({str(folder)!r})), PreprocessSpec(256, 224), "
        f"ArtifactCache(Path({str(tmp_path / 'cache')!r})), workers=1, "
        f"decode_memory_mb=load_policy().data.decode_memory_mb)")
    assert_bounded(result, "harness.data.errors.DataError", str(bomb), f"a {w}x{h} PNG image",
                   f"decoding budget of {budget} MB", "decode_memory_mb")


def test_the_worker_pool_refuses_it_naming_the_file(tmp_path: Path) -> None:
    folder = imagenet_folder(tmp_path / "imagenet", {"ILSVRC2012_val_00000009.JPEG": wide_png(60000)})
    with pytest.raises(DataError, match=r"ILSVRC2012_val_00000009.JPEG: a 60000x1 PNG image .* over the decoding "
                                        r"budget of 512 MB per image"):
        prepare_dataset(list_dataset(folder), SPEC, ArtifactCache(tmp_path / "cache"), workers=2)
    assert not list((tmp_path / "cache").glob("dataset/*/images.u8"))  # nothing published


@pytest.mark.parametrize("method", ["resize_crop", "squash_crop", "crop_resize"])
def test_every_recipe_is_budgeted_and_the_budget_is_an_argument(tmp_path: Path, method: str) -> None:
    """A 3000x2000 photo fits the default budget in every recipe; an 8 MB budget refuses it, and
    the 8000x1 bomb is cheap only where the recipe never makes it wide (squash, crop_resize)."""
    photo = tmp_path / "photo.JPEG"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (2000, 3000, 3), np.uint8)).save(photo, "JPEG")
    spec = PreprocessSpec(256, 224, method=method)
    assert preprocess_image(photo, spec).shape == (3, 224, 224)
    with pytest.raises(DataError, match=r"photo.JPEG: a 3000x2000 JPEG image .* budget of 8 MB per image"):
        preprocess_image(photo, spec, decode_memory_mb=8)
    thin = tmp_path / "thin.JPEG"
    wide_png(8000)(thin)
    if method == "resize_crop":
        with pytest.raises(DataError, match="8000x1 PNG"):
            preprocess_image(thin, spec)
    else:
        assert preprocess_image(thin, spec).shape == (3, 224, 224)


def test_the_estimate_is_an_upper_bound_of_the_measured_peak(tmp_path: Path) -> None:
    """decode_bytes against the peak a fresh process measures, on a baseline RGB, a progressive
    grayscale and a panorama (fixtures/policy.toml [data] lists more)."""
    rng = np.random.default_rng(2)
    cases = {"rgb.jpg": ("RGB", (1800, 2400), {}), "gray.jpg": ("L", (2000, 1500), {"progressive": True}),
             "pano.png": ("RGB", (300, 4000), {})}
    for name, (mode, (h, w), options) in cases.items():
        small = Image.fromarray(rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8))
        small.resize((w, h)).convert(mode).save(tmp_path / name, **options)
        with Image.open(tmp_path / name) as img:
            estimate_mb = decode_bytes(img, img.size, SPEC) / 2**20
        result = peak_of("from pathlib import Path\nfrom harness.data import preprocess_image\n"
                         "from harness.specs import PreprocessSpec",
                         f"preprocess_image(Path({str(tmp_path / name)!r}), PreprocessSpec(256, 224))")
        assert result["outcome"] == "returned"
        assert result["peak_mb"] <= estimate_mb * 1.02 + 1, (name, estimate_mb, result)


def test_a_decompression_bomb_header_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    """PIL's own MAX_IMAGE_PIXELS check (warning and error) is a DataError naming the file."""
    for size in [(10000, 10000), (20000, 20000)]:  # above PIL's warning limit, above its error limit
        path = tmp_path / f"bomb_{size[0]}.JPEG"
        declared_png(*size)(path)
        with pytest.raises(DataError, match=f"{path}: refusing a possible decompression bomb"):
            preprocess_image(path, SPEC)


def test_the_data_table_of_the_policy(tmp_path: Path) -> None:
    assert load_policy().data.decode_memory_mb == 512
    text = (ROOT / "fixtures" / "policy.toml").read_text()
    head = text[: text.index("[data]")]
    for table, match in [("", None), ("[data]\ndecode_memory_mb = 1024\n", None),
                         ("[data]\ndecode_memory_mb = 8\n", "decode_memory_mb"),
                         ("[data]\ndecode_memory_mb = 512.5\n", "decode_memory_mb"),
                         ("[data]\nmemory = 512\n", "unknown field")]:
        path = tmp_path / "policy.toml"
        path.write_text(head + table)
        if match is None:
            assert load_policy(path).data.decode_memory_mb == (1024 if table else 512)
        else:
            with pytest.raises(SpecError, match=match):
                load_policy(path)


# --------------------------------------------------------------------------------------------
# .npy from outside


def npy_bytes(header: dict[str, Any], data: bytes = b"") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + data


def lying_npy(path: Path) -> Path:
    """192 bytes whose header claims a 10^6 x 10^6 float32 array: 3.6 TiB."""
    path.write_bytes(npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}, bytes(64)))
    assert path.stat().st_size == 192
    return path


def test_a_lying_npy_header_is_refused_before_any_allocation(tmp_path: Path) -> None:
    path = lying_npy(tmp_path / "ILSVRC2012_val_00000001_0.npy")
    with pytest.raises(PredictionsError, match=r"holds 1000000000 rows of 1000 logits"):
        _load_values(path, 1000)
    result = peak_of("from pathlib import Path\nfrom harness.judge.predictions import _load_values",
                     f"_load_values(Path({str(path)!r}), 1000)")
    assert_bounded(result, "harness.judge.predictions.PredictionsError", str(path))
    with pytest.raises(UntrustedInput, match=r"promises 4000000000000 bytes"):
        read_npy(path, "x")
    with pytest.raises(UntrustedInput, match=r"shape \(1000000, 1000000\), expected \(8, 1000\)"):
        read_npy(path.read_bytes(), "x", shape=(8, 1000))


@pytest.mark.parametrize("array, match", [
    (np.zeros(1000, np.complex64), "complex64"),
    (np.zeros(1000, "datetime64[s]"), "datetime64"),
    (np.zeros(1000, "timedelta64[s]"), "timedelta64"),
    (np.array(["1.0"] * 1000), "<U3"),
    (np.zeros(1000, "S4"), "S4"),
    (np.zeros(1000, bool), "bool"),
    (np.zeros(1000, [("a", "<f4")]), "structured"),
])
def test_logits_that_are_not_numbers_are_refused(tmp_path: Path, array: np.ndarray, match: str) -> None:
    path = tmp_path / "ILSVRC2012_val_00000001_0.npy"
    np.save(path, array)
    with pytest.raises(PredictionsError, match=match):
        _load_values(path, 1000)


def test_an_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "ILSVRC2012_val_00000001_0.npy"
    np.save(path, np.array([{"a": 1}] * 1000, dtype=object), allow_pickle=True)
    with pytest.raises(PredictionsError, match="object dtype"):
        _load_values(path, 1000)


@pytest.mark.parametrize("array", [
    np.arange(1000, dtype=np.float16), np.arange(1000, dtype=">f8").reshape(1, 1000),
    np.asfortranarray(np.arange(1000, dtype=np.float32).reshape(10, 100)),
    np.arange(1000, dtype=np.int32),  # a quantized model's integer output: still scores
])
def test_honest_logits_of_any_float_or_integer_dtype_are_read(tmp_path: Path, array: np.ndarray) -> None:
    path = tmp_path / "ILSVRC2012_val_00000001_0.npy"
    np.save(path, array)
    values = _load_values(path, 1000)
    assert values.dtype == np.float32 and np.array_equal(values, np.arange(1000, dtype=np.float32))


@pytest.mark.parametrize("case, match", [
    ("padded_npy", "holds 2 rows of 1000 logits"),
    ("short_npy", "3996 bytes of data after the .npy header, which promises 4000"),
    ("long_npy", "the file is truncated or padded"),
    ("nan_npy", "NaN or Inf"),
    ("huge_txt", "more than 1000 numbers take"),
    ("huge_bin", "holds 262144 rows of 1000 logits"),
    ("odd_huge_bin", "neither 1000 float32"),
])
def test_prediction_files_are_sized_before_they_are_read(tmp_path: Path, case: str, match: str) -> None:
    path = tmp_path / f"ILSVRC2012_val_00000001_0.{case.rsplit('_', 1)[1]}"
    row = np.arange(1000, dtype=np.float32)
    if case == "padded_npy":
        np.save(path, np.stack([row, row]))
    elif case in ("short_npy", "long_npy"):
        blob = io.BytesIO()
        np.save(blob, row)
        path.write_bytes(blob.getvalue()[:-4] if case == "short_npy" else blob.getvalue() + b"\0")
    elif case == "nan_npy":
        np.save(path, np.full(1000, np.nan, np.float32))
    else:  # sparse files of ~1 GB: nothing on disk, and nothing read
        with path.open("wb") as fh:
            fh.truncate({"huge_txt": 1 << 30, "huge_bin": 4000 * 262144, "odd_huge_bin": 4000 * 262144 + 1}[case])
    with pytest.raises(PredictionsError, match=match):
        _load_values(path, 1000)


def test_a_sparse_gigabyte_prediction_file_costs_no_memory(tmp_path: Path) -> None:
    path = tmp_path / "ILSVRC2012_val_00000001_0.txt"
    with path.open("wb") as fh:
        fh.truncate(1 << 30)
    result = peak_of("from pathlib import Path\nfrom harness.judge.predictions import _load_values",
                     f"_load_values(Path({str(path)!r}), 1000)")
    assert_bounded(result, "harness.judge.predictions.PredictionsError", "more than 1000 numbers take")


# --------------------------------------------------------------------------------------------
# JSON from outside


DEEP = "[" * 100_000 + "]" * 100_000
BIG_INT = "1" * 5000


@pytest.mark.parametrize("text, match", [
    (DEEP, "nested 100000 deep, more than the 64"),
    ('{"a": ' * 100_000 + "1" + "}" * 100_000, "nested 100000 deep"),
    (f'{{"count": {BIG_INT}}}', "a number of 5000 characters"),
    (f'[{BIG_INT}.5]', "a number of 5002 characters"),
    ("[1e999]", "1e999 is not a finite float"),
    ('{"a": NaN}', "NaN is not a number JSON allows"),
    ("[-Infinity]", "-Infinity is not a number JSON allows"),
    (b'{"a": "\xff"}', "not UTF-8"),
])
def test_json_from_outside_is_refused_with_the_suite_s_error(text: Any, match: str) -> None:
    with pytest.raises(UntrustedInput, match=match) as err:
        load_json_text(text, "results.jsonl:7")
    assert str(err.value).startswith("results.jsonl:7: ") and isinstance(err.value, HarnessError)


def test_results_lines_keep_nan_and_tell_a_cut_line() -> None:
    """How harness/records/results.py reads a line: its writer spells a missing figure NaN; a cut
    line is a JsonSyntaxError, which is also a json.JSONDecodeError (msg, pos) for its cut-line rule."""
    value = load_json_text('{"top1": NaN, "x": Infinity, "n": 12345678901234567890}', "r.jsonl:1", nonfinite=True)
    assert np.isnan(value["top1"]) and value["x"] == float("inf") and value["n"] == 12345678901234567890
    cut = '{"kind": "accuracy", "top1": 7'
    with pytest.raises(JsonSyntaxError) as err:
        load_json_text(cut, "r.jsonl:9", nonfinite=True)
    exc = err.value
    assert isinstance(exc, json.JSONDecodeError) and isinstance(exc, UntrustedInput)
    assert exc.msg.startswith("Expecting") and exc.pos == len(cut) and str(exc).startswith("r.jsonl:9: not JSON")
    again = pickle.loads(pickle.dumps(exc))  # crosses a worker process intact
    assert str(again) == str(exc) and again.pos == exc.pos
    assert load_json_text('"[[[[" ', "x") == "[[[["  # brackets inside strings are not nesting


def result_json(path: Path, images: Any = "50000", classes: Any = "1000") -> Path:
    path.write_text(json.dumps({"title": "Overall statistical evaluation", "value": [
        {"key": "Number of images", "value": images}, {"key": "Number of classes", "value": classes},
        {"key": "Top1 accuracy", "value": "77.62%"}]}))
    return path


@pytest.mark.parametrize("content, match", [
    (DEEP, "nested 100000 deep"),
    ('{"value": [{"key": "Number of images", "value": ' + BIG_INT + "}]}", "a number of 5000 characters"),
    ('{"value": [{"key": "Top1 accuracy", "value": 1e999}]}', "not a finite float"),
])
def test_a_hostile_result_json_is_a_predictions_error(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "result.json"
    path.write_text(content)
    with pytest.raises(PredictionsError, match=f"{path}: not a readable JSON file .*{match}"):
        read_result_json(path)


def test_result_json_values_that_used_to_crash(tmp_path: Path) -> None:
    assert read_result_json(result_json(tmp_path / "a.json", classes="²")).classes is None
    assert read_result_json(result_json(tmp_path / "b.json", classes="9" * 5000)).classes is None
    with pytest.raises(PredictionsError, match="must be an integer"):
        read_result_json(result_json(tmp_path / "c.json", images="9" * 5000))
    with pytest.raises(PredictionsError, match="more than any ImageNet evaluation has"):
        read_result_json(result_json(tmp_path / "d.json", images="1" + "0" * 400))
    huge = tmp_path / "result.json"
    with huge.open("wb") as fh:
        fh.truncate(1 << 30)
    with pytest.raises(PredictionsError, match="1073741824 bytes, more than"):
        read_result_json(huge)


# --------------------------------------------------------------------------------------------
# Reference files


CLASSES, IMAGES = 10, 4
INPUTS = {"format": 2, "arch": {"source": "torchvision", "name": "tiny"}, "num_classes": CLASSES,
          "weights": {"kind": "seeded", "seed": 0}, "normalize": {"mean": [0.5] * 3, "std": [0.5] * 3},
          "images": {"sha256": "0" * 64, "shape": [IMAGES, 3, 8, 8], "dtype": "uint8"}}


def reference_zip(path: Path, change: Callable[[dict[str, Any], dict[str, bytes]], None] | None = None,
                  write: Callable[[zipfile.ZipFile], None] | None = None) -> Path:
    """A reference file as export writes it (one entry of IMAGES x CLASSES logits), with ``change``
    applied to (index, members) and ``write`` given the open zip to add members its own way."""
    buf = io.BytesIO()
    np.save(buf, np.arange(IMAGES * CLASSES, dtype=np.float32).reshape(IMAGES, CLASSES))
    blob = buf.getvalue()
    key = content_key(INPUTS)
    index = {"format": "modelzoo-cert reference-logits", "version": 1, "entries": [
        {"key": key, "inputs": json.loads(json.dumps(INPUTS)), "model": "tiny", "shape": [IMAGES, CLASSES],
         "dtype": "float32", "member": f"{key}.npy", "sha256": hashlib.sha256(blob).hexdigest(), "torch": "2.x",
         "computed_host": "there", "computed_at": "2026-01-01T00:00:00+0000"}]}
    members = {f"{key}.npy": blob}
    if change is not None:
        change(index, members)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if "reference.json" not in members:
            zf.writestr("reference.json", json.dumps(index))
        if write is not None:
            write(zf)
    return path


def test_the_honest_file_of_these_tests_is_read(tmp_path: Path) -> None:
    index, [entry] = read_reference_file(reference_zip(tmp_path / "ref.zip"))
    assert entry.model == "tiny" and entry.logits.shape == (IMAGES, CLASSES) and entry.logits.dtype == np.float32
    assert entry.logits.flags.writeable


def zeros_member(name: str, size: int, declare: int | None = None) -> Callable[[zipfile.ZipFile], None]:
    """A deflated member of ``size`` zero bytes (1000x smaller in the file); ``declare``: the size
    the central directory states instead (the local header keeps the true one)."""
    def write(zf: zipfile.ZipFile) -> None:
        with zf.open(name, "w") as fh:
            chunk = bytes(1 << 20)
            for start in range(0, size, len(chunk)):
                fh.write(chunk[: size - start])
        if declare is not None:
            zf.getinfo(name).file_size = declare
    return write


def entry_member(index: dict[str, Any]) -> str:
    return str(index["entries"][0]["member"])


def bomb_member(size: int, declare: int | None = None, shape: tuple[int, int] | None = None
                ) -> Callable[[Path], Path]:
    """A file whose one entry's member is ``size`` zeros (declared as ``declare``); ``shape``: the
    shape its inputs give the logits (the key recomputed to match)."""
    def build(path: Path) -> Path:
        inputs = json.loads(json.dumps(INPUTS))
        if shape is not None:
            inputs["images"]["shape"][0], inputs["num_classes"] = shape
        key = content_key(inputs)

        def change(index: dict[str, Any], members: dict[str, bytes]) -> None:
            members.clear()
            index["entries"][0].update(key=key, inputs=inputs, member="big.npy", shape=list(shape or (IMAGES, CLASSES)))
        return reference_zip(path, change, zeros_member("big.npy", size, declare))
    return build


def index_bomb(path: Path) -> Path:
    """A file whose reference.json is 64 MiB of zeros (64 KB deflated)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zeros_member("reference.json", 64 << 20)(zf)
    return path


REFERENCE_BOMBS = {
    # the finding: a 2 GiB member in a 2 MB file, here declared in a file of a few KB
    "declared 2 GiB": (bomb_member(1 << 20, declare=(2 << 30) - 1), r"declares 2147483647 bytes, expected 0\.\.10172"),
    "streamed past its declared size": (
        bomb_member(64 << 20, declare=IMAGES * CLASSES * 4 + 128),
        "unreadable member .*Bad CRC-32",
    ),
    "zeros at 1000x": (bomb_member(8192 * 1000 * 4 + 128, shape=(8192, 1000)), r"ratio \d{4}, more than 20.*zip bomb"),
    "a shape of 4 GB": (bomb_member(1 << 10, shape=(10**6, 1000)), "4000000000 bytes, more than one entry may hold"),
    "a deflated 64 MiB index": (index_bomb, r"reference.json: declares 67108864 bytes, expected 0\.\.16777216"),
    "2000 members": (
        lambda path: reference_zip(path, write=lambda zf: [zf.writestr(f"{i}.npy", b"") for i in range(2000)]),
        "2002 members, more than the 1025 allowed",
    ),
    "a deep index": (
        lambda path: reference_zip(path, lambda index, members: members.update({"reference.json": DEEP.encode()})),
        "reference.json: JSON nested 100000 deep",
    ),
    "a 5000-digit integer in the index": (
        lambda path: reference_zip(
            path,
            lambda index, members: members.update(
                {"reference.json": json.dumps(index).replace('"version": 1', f'"version": {BIG_INT}').encode()}
            ),
        ),
        "a number of 5000 characters",
    ),
    "a lying npy header": (
        lambda path: reference_zip(
            path,
            lambda index, members: (
                members.update({entry_member(index): lying_npy(path.with_suffix(".npy")).read_bytes()}),
                index["entries"][0].update(sha256=hashlib.sha256(members[entry_member(index)]).hexdigest()),
            ),
        ),
        r"shape \(1000000, 1000000\), expected \(4, 10\)",
    ),
    "complex logits": (
        lambda path: reference_zip(
            path,
            lambda index, members: (
                members.update(
                    {
                        entry_member(index): npy_bytes(
                            {"descr": "<c8", "fortran_order": False, "shape": (4, 10)}, bytes(320)
                        )
                    }
                ),
                index["entries"][0].update(sha256=hashlib.sha256(members[entry_member(index)]).hexdigest()),
            ),
        ),
        "dtype complex64",
    ),
}


@pytest.mark.parametrize("case", sorted(REFERENCE_BOMBS))
def test_a_hostile_reference_file_is_refused_with_bounded_memory(tmp_path: Path, case: str) -> None:
    build, match = REFERENCE_BOMBS[case]
    path = build(tmp_path / "ref.zip")
    assert path.stat().st_size < 1 << 20  # each bomb is a small file
    with pytest.raises(ReferenceFileError, match=match):
        read_reference_file(path)
    result = peak_of("from pathlib import Path\nfrom harness.run.reference_file import read_reference_file",
                     f"read_reference_file(Path({str(path)!r}))")
    assert_bounded(result, "harness.run.reference_file.ReferenceFileError", str(path))


@pytest.mark.parametrize("field, value, match", [
    ("shape", "x", "shape 'x'"),
    ("member", 5, "member 5"),
    ("key", 5, "key 5"),
    ("sha256", None, "sha256 None"),
    ("model", ["m"], r"model \['m'\]"),
    ("inputs", "abc", "inputs 'abc'"),
    ("shape", [4, True], r"shape \[4, True\]"),
])
def test_index_fields_of_the_wrong_type_are_named(tmp_path: Path, field: str, value: Any, match: str) -> None:
    path = reference_zip(tmp_path / "ref.zip", lambda index, _m: index["entries"][0].update({field: value}))
    with pytest.raises(ReferenceFileError, match=f"field.s. of the wrong type: {match}"):
        read_reference_file(path)


@pytest.mark.parametrize("change, match", [
    (lambda index: index.update(entries=[1]), "lacks one of"),
    (lambda index: index.update(entries="x"), "no entries"),
    (lambda index: index["entries"][0]["inputs"]["images"].update(shape="abc"), "lack the images' shape"),
    (lambda index: index["entries"][0]["inputs"].update(num_classes="10"), "lack the images' shape"),
    (lambda index: index["entries"][0]["inputs"].update(images=[]), "lack the images' shape"),
])
def test_inputs_of_the_wrong_type_are_named(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], match: str
) -> None:
    def edit(index: dict[str, Any], _members: dict[str, bytes]) -> None:
        change(index)
        for item in index["entries"] if isinstance(index["entries"], list) else []:
            if isinstance(item, dict):  # the key recomputed: the inputs themselves are what is wrong
                item["key"] = content_key(item["inputs"])
    with pytest.raises(ReferenceFileError, match=match):
        read_reference_file(reference_zip(tmp_path / "ref.zip", edit))


# --------------------------------------------------------------------------------------------
# Property tests: any input, a result or the suite's own error


def _npy_prefixed(draw: Callable[..., Any]) -> bytes:
    descr = draw(st.sampled_from(["<f4", ">f8", "<f2", "<i4", "|b1", "<c8", "<M8[s]", "<U3", "|O", "|V4",
                                  [("a", "<f4")], "<f4x", 5, "<U2147483647"]))
    shape = draw(st.one_of(st.tuples(st.integers(-2, 6), st.integers(-2, 6)), st.just((10**12, 10**12)),
                           st.lists(st.integers(0, 3), max_size=4).map(tuple), st.just("bad")))
    header = f"{{'descr': {descr!r}, 'fortran_order': {draw(st.booleans())}, 'shape': {shape!r}, }}"
    head = b"\x93NUMPY" + bytes([draw(st.sampled_from([1, 2, 3])), 0])
    encoded = header.encode("latin1") + b"\n"
    length = len(encoded).to_bytes(2 if head[6] == 1 else 4, "little")
    return head + length + encoded + draw(st.binary(max_size=200))


npy_like = st.one_of(st.binary(max_size=300), st.composite(lambda draw: _npy_prefixed(draw))())


@PROPERTY
@given(data=npy_like, shape=st.sampled_from([None, (2, 3), (3,)]))
def test_read_npy_of_any_bytes(data: bytes, shape: tuple[int, ...] | None) -> None:
    try:
        array = read_npy(data, "x.npy", shape=shape, kinds="fiu")
    except UntrustedInput:
        return
    assert isinstance(array, np.ndarray) and array.dtype.kind in "fiu"
    assert shape is None or array.shape == shape


json_like = st.one_of(
    st.text(alphabet='[]{}",:0123456789eE.-+ ntrufalsNIiy\\xu', max_size=200),
    st.text(max_size=100),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
        max_leaves=30,
    ).map(json.dumps),
    st.integers(1, 200).map(lambda n: "[" * n + "]" * n),
)


@PROPERTY
@given(text=json_like, nonfinite=st.booleans())
def test_load_json_text_of_any_text(text: str, nonfinite: bool) -> None:
    try:
        value = load_json_text(text, "x", nonfinite=nonfinite)
    except UntrustedInput as exc:
        assert str(exc).startswith("x: ")
        return
    json.dumps(value)  # whatever was accepted serializes again (no depth or size trap later)


def _json_value() -> st.SearchStrategy[Any]:
    leaves = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.text(max_size=8),
                       st.sampled_from(["modelzoo-cert reference-logits", "0" * 64, "reference.json", "a.npy"]))
    return st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                        max_leaves=20)


@st.composite
def _index_like(draw: Callable[..., Any]) -> bytes:
    """Mostly the honest index with a field replaced by any JSON value, sometimes anything."""
    item = {"key": content_key(INPUTS), "inputs": json.loads(json.dumps(INPUTS)), "model": "tiny",
            "shape": [IMAGES, CLASSES], "sha256": "0" * 64, "member": "a.npy"}
    index: Any = {"format": "modelzoo-cert reference-logits", "version": 1, "entries": [item]}
    target = draw(st.sampled_from(["none", "index", "item", "inputs", "images", "whole"]))
    where = {"index": index, "item": item, "inputs": item["inputs"], "images": item["inputs"]["images"]}.get(target)
    if where is not None:
        where[draw(st.sampled_from(sorted(where) + ["extra"]))] = draw(_json_value())
    if target == "whole":
        index = draw(_json_value())
    return json.dumps(index).encode()


@PROPERTY
@given(members=st.dictionaries(st.sampled_from(["reference.json", "a.npy", "b.npy", "x"]),
                               st.one_of(st.binary(max_size=400), _index_like(), npy_like), max_size=3),
       deflate=st.booleans())
def test_read_reference_file_of_any_small_zip(tmp_path_factory: pytest.TempPathFactory, members: dict[str, bytes],
                                              deflate: bool) -> None:
    path = tmp_path_factory.mktemp("zips") / "ref.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    try:
        index, entries = read_reference_file(path)
    except ReferenceFileError:
        return
    assert all(e.logits.dtype == np.float32 for e in entries) and isinstance(index, dict)


@PROPERTY
@given(content=st.one_of(st.binary(max_size=300), json_like.map(str.encode),
                         st.builds(lambda images, top1: json.dumps({"value": [
                             {"key": "Number of images", "value": images}, {"key": "Top1 accuracy", "value": top1},
                             {"key": "Number of classes", "value": images}]}).encode(),
                             _json_value(), _json_value())))
def test_read_result_json_of_any_file(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("rj") / "result.json"
    path.write_bytes(content)
    try:
        reported = read_result_json(path)
    except PredictionsError:
        return
    assert 0 <= reported.top1 <= 100 and reported.count > 0
    reported.as_accuracy()


@PROPERTY
@given(content=st.one_of(st.binary(max_size=300), npy_like,
                         st.lists(st.floats(allow_nan=True), max_size=12)
                         .map(lambda v: " ".join(map(str, v)).encode())),
       suffix=st.sampled_from([".txt", ".npy", ".bin"]))
def test_load_values_of_any_file(tmp_path_factory: pytest.TempPathFactory, content: bytes, suffix: str) -> None:
    path = tmp_path_factory.mktemp("pred") / f"img_0{suffix}"
    path.write_bytes(content)
    try:
        values = _load_values(path, 3)
    except PredictionsError:
        return
    assert values.shape == (3,) and values.dtype == np.float32 and np.isfinite(values).all()
