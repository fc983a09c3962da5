"""Bad inputs: each is refused with an error that says what was expected, what was found and how
to fix it, or (for unusual but valid files) decoded correctly. tests/test_data.py,
test_weights.py, test_export.py and test_backends.py already cover the plain cases (bad label
lines, missing or empty directories, truncated/corrupt/zero-byte/non-image files, bombs in
preprocess_image, checksum mismatches, wrong architectures, a checker failure, a wrong class count,
NaN logits); this file covers what they do not. docs/reliability.md lists them all.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from harness.backends.base import BackendUnavailable, InferenceError
from harness.cache import ArtifactCache, CacheError
from harness.data import (
    DataError,
    list_dataset,
    prepare_dataset,
    preprocess_image,
    read_labels,
)
from harness.model.export import ExportError, onnx_input_output, validate_onnx
from harness.model.weights import WeightsError, WeightsNotFound, load_pretrained
from harness.specs import CompileTarget, PreprocessSpec, SpecError, load_models

from ._support import leftovers, published

SPEC = PreprocessSpec(resize=256, crop=224)


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png(
    path: Path, pixels: np.ndarray, bit_depth: int, color_type: int, declared: tuple[int, int] | None = None
) -> Path:
    """A PNG written by hand (PIL cannot write 16-bit RGB); ``declared`` overrides the header size."""
    height, width = pixels.shape[:2]
    rows = pixels.astype(">u2" if bit_depth == 16 else np.uint8).reshape(height, -1)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    w, h = declared or (width, height)
    header = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def real_rgb(val_1300: Path) -> np.ndarray:
    name = sorted(p.name for p in (val_1300 / "val").iterdir())[0]
    with Image.open(val_1300 / "val" / name) as img:
        return np.asarray(img.convert("RGB"))


# --------------------------------------------------------------------------------------------
# Label files and the label/image join


def test_a_jpeg_given_as_the_label_file_is_a_data_error(real_images: Path) -> None:
    """--imagenet-labels pointing at an image (a plausible slip): 'not UTF-8 text', not a crash."""
    jpeg = next(real_images.glob("*.JPEG"))
    with pytest.raises(DataError, match=f"{jpeg}: not UTF-8 text .* expected a ModelZoo label file"):
        list_dataset(real_images, label_file=jpeg)


def test_an_unreadable_label_path_is_a_data_error(tmp_path: Path) -> None:
    """A label path through a regular file (ENOTDIR) used to escape as a raw OSError."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"cannot read label file .*file/val_label.txt: Not a directory"):
        read_labels(tmp_path / "file" / "val_label.txt")


def test_label_mismatch_names_the_option_and_intersect_counts_reach_the_result(
    own_real_images: Path, tmp_path: Path
) -> None:
    """Two labelled images deleted and three unlabelled ones added: the default refuses and names
    --on-label-mismatch; with intersect (the CLI option, through the Workbench) the 22 remaining
    labelled images are scored and the counts travel into the listing and the cache manifest."""
    from harness.run.workbench import RunConfig, Workbench
    from harness.specs import load_policy

    names = sorted(p.name for p in own_real_images.glob("*.JPEG"))
    for name in names[:2]:
        (own_real_images / name).unlink()
    for i in range(3):
        shutil.copyfile(own_real_images / names[5], own_real_images / f"extra_{i}.JPEG")
    with pytest.raises(DataError) as err:
        list_dataset(own_real_images)
    assert "3 image(s) have no label" in str(err.value) and "2 label(s) name images that are not there" in str(
        err.value
    )
    assert "--on-label-mismatch intersect" in str(err.value)

    wb = Workbench(RunConfig(imagenet=own_real_images, on_label_mismatch="intersect", cache_dir=tmp_path / "cache",
                             workers=1), load_policy())
    listing = wb.listing("imagenet")
    assert len(listing) == 22 and (listing.skipped_unlabeled, listing.skipped_missing) == (3, 2)
    spec = dataclasses.replace(
        load_models()["efficientnet_lite0"], preprocess=PreprocessSpec(36, 32), preprocess_variants={}
    )
    prepared = wb.dataset(spec, "imagenet")
    manifest = json.loads((prepared.path / "manifest.json").read_text())
    assert len(prepared) == 22 and prepared.path.parent == tmp_path / "cache" / "dataset"
    assert (manifest["skipped_unlabeled"], manifest["skipped_missing"]) == (3, 2)


# --------------------------------------------------------------------------------------------
# Images


@functools.lru_cache(maxsize=1)
def _first_grayscale(sample_1000: Path) -> Path:
    for path in sorted((sample_1000 / "images").iterdir()):
        with Image.open(path) as img:
            if img.mode == "L":
                return path
    raise AssertionError(f"no grayscale JPEG in {sample_1000}")


def _variants(val_1300: Path, sample_1000: Path, tmp_path: Path) -> dict[str, tuple[Path, Path | None]]:
    """Unusual encodings of real photos: (file, 8-bit RGB reference it must match or None)."""
    rgb = real_rgb(val_1300)
    reference = tmp_path / "reference.png"
    Image.fromarray(rgb).save(reference)
    out: dict[str, tuple[Path, Path | None]] = {"reference": (reference, reference)}
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    out["cmyk-jpeg"] = (tmp_path / "cmyk.jpg", reference)
    out["rgb-16-bit-png"] = (write_png(tmp_path / "rgb16.png", rgb.astype(np.uint16) * 257, 16, 2), reference)
    alpha = np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])
    Image.fromarray(alpha, "RGBA").save(tmp_path / "rgba.png")
    out["rgba-png"] = (tmp_path / "rgba.png", reference)
    Image.fromarray(rgb).quantize(256).save(tmp_path / "palette.png")
    out["palette-png"] = (tmp_path / "palette.png", reference)
    out["real-grayscale-jpeg"] = (_first_grayscale(sample_1000), None)
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    out["gray-alpha-png"] = (tmp_path / "la.png", None)
    return out


@pytest.mark.parametrize("kind", ["cmyk-jpeg", "rgb-16-bit-png", "rgba-png", "palette-png", "real-grayscale-jpeg",
                                  "gray-alpha-png"])
def test_unusual_but_valid_images_decode_to_the_right_colours(
    kind: str, val_1300: Path, sample_1000: Path, tmp_path: Path
) -> None:
    """CMYK JPEGs (some photo tools write them), 16-bit RGB PNGs, alpha and palette PNGs decode
    to the photo's colours (CMYK not inverted: mean error below 4/255; 16-bit and alpha exact),
    and grayscale ones to three equal channels, as torchvision's loader would."""
    variants = _variants(val_1300, sample_1000, tmp_path)
    path, reference = variants[kind]
    out = preprocess_image(path, SPEC)
    assert out.shape == (3, 224, 224) and out.dtype == np.uint8
    if reference is None:
        assert np.array_equal(out[0], out[1]) and np.array_equal(out[1], out[2])
        assert out.std() > 10, "a real photo, not a flat image"
        return
    expected = preprocess_image(reference, SPEC).astype(np.int16)
    error = np.abs(out.astype(np.int16) - expected).mean()
    limit = {"cmyk-jpeg": 4.0, "palette-png": 4.0}.get(kind, 0.0)
    assert error <= limit, f"{kind}: mean |error| {error:.2f} > {limit}"


def test_a_16_bit_grayscale_png_is_refused_instead_of_turning_white(val_1300: Path, tmp_path: Path) -> None:
    """PIL's RGB conversion clips 16-bit grayscale to 255 (the photo becomes almost white, and
    torchvision's loader would feed that to the model); the harness refuses the file, says why
    and how to convert it."""
    gray16 = (np.asarray(Image.fromarray(real_rgb(val_1300)).convert("L")).astype(np.uint16) * 257)
    path = tmp_path / "gray16.png"
    Image.fromarray(gray16).save(path)
    with Image.open(path) as img:
        assert img.mode == "I;16"
        assert (np.asarray(img.convert("RGB")) == 255).mean() > 0.9  # the misreading it prevents
    with pytest.raises(DataError) as err:
        preprocess_image(path, SPEC)
    message = str(err.value)
    assert str(path) in message and "16-bit grayscale image (PIL mode I;16)" in message
    assert "clips" in message and "convert it to 8 bits" in message


@pytest.mark.parametrize("kind", ["16-bit-grayscale", "decompression-bomb"])
def test_a_bad_image_among_real_ones_fails_the_parallel_build_naming_it(
    kind: str, own_real_images: Path, tmp_path: Path
) -> None:
    """In a two-worker build the worker's DataError reaches the caller intact, naming the file;
    nothing is published. The bomb is a 200-byte PNG declaring 20000x20000 (1.2 GB of RGB):
    refused from its header, never decoded."""
    bad = own_real_images / "ILSVRC2012_val_99999999.png"
    if kind == "decompression-bomb":
        write_png(bad, np.zeros((1, 1, 3), np.uint8), 8, 2, declared=(20_000, 20_000))
        fragment = "refusing a possible decompression bomb"
    else:
        Image.fromarray(np.full((64, 64), 40_000, np.uint16)).save(bad)
        fragment = "16-bit grayscale image"
    with (own_real_images / "val_label.txt").open("a") as fh:
        fh.write(f"{bad.name} 1\n")
    root = tmp_path / "cache"
    with pytest.raises(DataError) as err:
        prepare_dataset(list_dataset(own_real_images), SPEC, ArtifactCache(root), workers=2)
    assert str(bad) in str(err.value) and fragment in str(err.value)
    assert published(root, "dataset") == [] and leftovers(root) == []


# --------------------------------------------------------------------------------------------
# Weights that try to run code


class _Exploit:
    """A pickle payload that runs a shell command when unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _checkpoint(kind: str, path: Path, payload: object) -> None:
    import torch

    content = {"conv.weight": torch.zeros(1), "extra": payload}
    if kind == "torch-zip":
        torch.save(content, path)
    elif kind == "torch-legacy":
        torch.save(content, path, _use_new_zipfile_serialization=False)
    else:  # a bare pickle, no torch container; protocol 2 is what torch.load's unpickler parses
        path.write_bytes(pickle.dumps({"extra": payload}, protocol=2))


@pytest.mark.parametrize("kind", ["torch-zip", "torch-legacy", "raw-pickle"])
def test_a_checkpoint_that_runs_a_shell_command_is_refused_even_with_a_matching_checksum(
    kind: str, tmp_path: Path
) -> None:
    """The checksum only proves the file is the one the registry names; if that file is malicious
    (a poisoned mirror whose checksum was recorded), loading it must still not run its code.
    The payload provably runs under plain pickle; through load_pretrained it is refused, the
    error names the smuggled global, and the marker file never appears."""
    import hashlib

    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Exploit(proof)))
    assert proof.exists(), "the payload must really run code when unpickled unsafely"

    marker = tmp_path / "pwned"
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    path = weights_dir / "evil-0000.pth"
    _checkpoint(kind, path, _Exploit(marker))
    base = load_models()["resnext50_32x4d"]
    spec = dataclasses.replace(base, weights=dataclasses.replace(
        base.weights, filename=path.name, url=None, md5=None, sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        sha256_prefix=None, package=None, package_path=None))
    with pytest.raises(WeightsError) as err:
        load_pretrained(spec, weights_dir, allow_download=False)
    message = str(err.value)
    assert "refused for safety" in message and str(path) in message
    assert "GLOBAL posix.system" in message
    assert "\x1b[" not in message
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# ONNX files


def _onnx_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        name: tmp_path / f"{name}.onnx" for name in ("garbage", "zero-byte", "html", "absent", "missing-external-data")
    }
    files["garbage"].write_bytes(b"\x08\x07garbage" * 100)
    files["zero-byte"].write_bytes(b"")
    files["html"].write_text("<html>404 Not Found</html>")
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])
    weight = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["output"])], "g", [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.save_model(model, str(files["missing-external-data"]), save_as_external_data=True,
                    location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    return files


@pytest.mark.parametrize("kind", ["garbage", "zero-byte", "html", "absent", "missing-external-data"])
def test_unreadable_onnx_files_are_export_errors(kind: str, tmp_path: Path) -> None:
    """validate_onnx (the gate before compile) and onnx_input_output both answer ExportError
    naming the file; the latter used to leak protobuf's DecodeError or FileNotFoundError."""
    path = _onnx_files(tmp_path)[kind]
    with pytest.raises(ExportError, match="fails the ONNX checker") as err:
        validate_onnx(path, 11, "input", "output")
    assert str(path) in str(err.value)
    if kind in ("garbage", "html", "absent"):
        with pytest.raises(ExportError, match="is not a readable ONNX model") as err:
            onnx_input_output(path)
        assert str(path) in str(err.value)


# --------------------------------------------------------------------------------------------
# Model outputs that are not logits


CLASSES = 10
SHAPE = (3, 8, 8)


def _bad_output_graph(path: Path, kind: str) -> Path:
    """A real ONNX graph (pool -> linear, all-ones weights) whose output is wrong in one way."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *SHAPE])
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "w"], ["logits"], transB=1),
    ]
    out_type, out_dims = TensorProto.FLOAT, ["batch", CLASSES]
    if kind == "sequence":
        nodes.append(helper.make_node("SequenceConstruct", ["logits"], ["output"]))
        y = helper.make_tensor_sequence_value_info("output", TensorProto.FLOAT, None)
    else:
        if kind == "int64":
            nodes.append(helper.make_node("Cast", ["logits"], ["output"], to=TensorProto.INT64))
            out_type = TensorProto.INT64
        elif kind == "ignores-batch":
            nodes.append(helper.make_node("ReduceMean", ["logits"], ["output"], axes=[0], keepdims=1))
            out_dims = [1, CLASSES]
        elif kind == "3-d":
            nodes.append(helper.make_node("Unsqueeze", ["logits"], ["output"], axes=[2]))
            out_dims = ["batch", CLASSES, 1]
        elif kind == "overflow":
            nodes.append(helper.make_node("Exp", ["logits"], ["output"]))
        y = helper.make_tensor_value_info("output", out_type, out_dims)
    weight = numpy_helper.from_array(np.ones((CLASSES, 3), np.float32), "w")
    graph = helper.make_graph(nodes, kind, [x], [y], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "kind, message",
    [
        ("sequence", r"expected a logits array of shape \(2, 10\), got a list"),
        ("int64", r"expected float logits, got int64 values of shape \(2, 10\)"),
        ("ignores-batch", r"expected logits of shape \(2, 10\), got \(1, 10\)"),
        ("3-d", r"expected logits of shape \(2, 10\), got \(2, 10, 1\)"),
        ("overflow", r"1 of 2 rows of logits contain NaN or Inf"),
    ],
)
def test_model_outputs_that_are_not_finite_n_by_classes_logits_are_refused(
    kind: str, message: str, tmp_path: Path
) -> None:
    """Real ONNX Runtime sessions on graphs whose output is a sequence (used to crash with
    AttributeError), integer class scores (used to pass silently), one row for the whole batch,
    an extra axis, or +Inf in one row only (Exp overflow on the bright image): InferenceError."""
    from harness.backends.base import get_backend

    backend = get_backend("onnxruntime", threads=1)
    target = CompileTarget(chip="cpu", batch_size=2, input_shape=SHAPE, input_name="input")
    batch = np.stack([np.zeros(SHAPE, np.float32), np.full(SHAPE, 100.0, np.float32)])
    with backend.open(_bad_output_graph(tmp_path / f"{kind}.onnx", kind), target, num_classes=CLASSES) as session:
        with pytest.raises(InferenceError, match=message):
            session.infer(batch)


def test_the_torch_reference_refuses_nan_logits() -> None:
    """The framework reference applies the same logits check as compiled sessions."""
    import torch

    from harness.backends.torch_ref import TorchSession

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, CLASSES))
    with torch.no_grad():
        module[1].bias.fill_(float("nan"))
    with pytest.raises(InferenceError, match="2 of 2 rows of logits contain NaN or Inf"):
        TorchSession(module, 2, SHAPE, CLASSES).infer(np.zeros((2, *SHAPE), np.float32))


def test_the_torch_reference_refuses_a_module_returning_a_tuple() -> None:
    """A module returning (logits, aux) (e.g. a train-mode Inception) must be an InferenceError."""
    import torch

    from harness.backends.torch_ref import TorchSession

    class TwoHeads(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            flat = x.flatten(1)[:, :CLASSES]
            return flat, flat

    with pytest.raises(InferenceError, match="returned a tuple"):
        TorchSession(TwoHeads(), 2, SHAPE, CLASSES).infer(np.zeros((2, *SHAPE), np.float32))


# --------------------------------------------------------------------------------------------
# Errors cross process boundaries intact


@pytest.mark.parametrize(
    "error",
    [
        DataError("bad image x.JPEG"),
        CacheError("disk full"),
        SpecError("bad registry"),
        WeightsError("checksum mismatch"),
        WeightsNotFound("no weights anywhere", short="resnest50: no weights"),
        ExportError("checker failed"),
        InferenceError("NaN logits"),
        BackendUnavailable("pip install onnxruntime"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_every_harness_error_survives_pickling(error: Exception) -> None:
    """Pool workers hand their exceptions to the parent by pickling them; an error class that
    cannot be rebuilt (WeightsNotFound could not: its ``short`` was lost) would turn a clear
    message into a TypeError about __init__ arguments."""
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert getattr(again, "short", None) == getattr(error, "short", None)
