"""Baselines as data: every seed figure, units and clocks, imported measurements, ratio rules.

The seed guides print ratio columns; these tests recompute each of them from the figures we
transcribed into fixtures/baselines/, which checks the transcription cell by cell.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.judge.baselines import (
    BaselineError,
    Figure,
    load_baselines,
    parse_ais_bench_summary,
    parse_csv,
    read_measurements,
    save_baseline,
)
from harness.judge.ratios import ratio_gate
from harness.specs import PerfRule, load_chips, load_models

CHIPS = load_chips()
MODELS = list(load_models())
SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"
HEADER = "model,batch_size,images_per_s,unit,clock,source,note\n"


def figures(chip: str, model: str) -> list[Figure]:
    return [f for f in load_baselines(chip, known_models=MODELS) if f.model == model]


def ratio(chip: str, baseline: str, model: str, bs: int | None = None) -> float:
    rule = next(r for r in CHIPS[chip].rules if r.baseline == baseline)
    mine, theirs = figures(chip, model), figures(baseline, model)
    if bs is not None:
        mine, theirs = [f for f in mine if f.batch_size == bs], [f for f in theirs if f.batch_size == bs]
    return ratio_gate(rule, mine, CHIPS[chip], theirs, CHIPS[baseline]).ratio


def test_every_seed_figure_is_in_the_baselines() -> None:
    counts = {chip: len(load_baselines(chip, known_models=MODELS)) for chip in ("Ascend310", "Ascend310P3", "T4")}
    # 310: ResNeXt-50 6 + ResNeXt-101 5 + SE-ResNeXt 6 + GhostNet 5; 310P3: 6 + ResNeSt 6 + 6 + 5; T4: 6 + 6 + 5
    assert counts == {"Ascend310": 22, "Ascend310P3": 23, "T4": 17}
    if SEEDS.is_dir():
        seed_files = {p.name for p in SEEDS.iterdir()}
        for chip in counts:
            for f in load_baselines(chip):
                assert f.source in seed_files, f"{chip} {f.model} bs{f.batch_size}: unknown source {f.source}"


# Ratio columns as printed by the seeds: 000 truncates to 4 decimals, 003 and 004 round.
PRINTED = [
    ("resnext50_32x4d", "Ascend310", {1: 2.1982, 4: 2.3125, 8: 2.2884, 16: 1.8651, 32: 2.4878, 64: 1.3305}),
    ("resnext50_32x4d", "T4", {1: 1.8619, 4: 2.8069, 8: 2.9592, 16: 3.0663, 32: 2.9611, 64: 1.3684}),
    ("se_resnext50_32x4d", "Ascend310", {1: 1.2801, 4: 1.9179, 8: 1.4626, 16: 1.2540, 32: 2.0108, 64: 1.2565}),
    ("se_resnext50_32x4d", "T4", {1: 1.8308, 4: 2.4040, 8: 1.6864, 16: 1.4591, 32: 1.9323, 64: 1.1369}),
    ("ghostnet_100", "Ascend310", {1: 1.1145, 4: 1.0374, 8: 1.5179, 16: 1.3101, 32: 1.1234}),
    ("ghostnet_100", "T4", {1: 6.8536, 4: 3.3061, 8: 3.6222, 16: 3.7176, 32: 6.7452}),
]


@pytest.mark.parametrize(("model", "baseline", "printed"), PRINTED, ids=[f"{m}-vs-{b}" for m, b, _ in PRINTED])
def test_per_batch_ratios_reproduce_the_seed_tables(model: str, baseline: str, printed: dict[int, float]) -> None:
    for bs, value in printed.items():
        assert ratio("Ascend310P3", baseline, model, bs) == pytest.approx(value, abs=1e-4), f"bs{bs}"


@pytest.mark.parametrize(("model", "baseline", "printed"), [
    ("resnext50_32x4d", "Ascend310", 1.9377), ("resnext50_32x4d", "T4", 2.7649),  # exact 2.764953: 000 truncates
    ("se_resnext50_32x4d", "Ascend310", 1.7977), ("se_resnext50_32x4d", "T4", 1.8991),
])
def test_best_batch_ratios_reproduce_the_seeds(model: str, baseline: str, printed: float) -> None:
    assert ratio("Ascend310P3", baseline, model) == pytest.approx(printed, abs=1e-4)


def test_per_chip_figures_become_per_card_figures() -> None:
    fig = next(f for f in figures("Ascend310", "resnext101_32x8d") if f.batch_size == 1)
    assert (fig.unit, fig.images_per_s) == ("per_chip", 144.766)
    assert fig.per_card(CHIPS["Ascend310"]) == pytest.approx(579.064)  # "144.766x4=579.064" in seed 001
    rule = PerfRule(baseline="Ascend310", min_ratio=1.2)
    mine = [Figure("Ascend310P3", "resnext101_32x8d", 1, 700.0, "per_card", "device_compute", "lab")]
    check = ratio_gate(rule, mine, CHIPS["Ascend310P3"], figures("Ascend310", "resnext101_32x8d"), CHIPS["Ascend310"])
    assert check.baseline.batch_size == 8 and check.baseline_per_card == pytest.approx(670.084)
    assert check.ratio == pytest.approx(700.0 / 670.084) and not check.passed
    assert "FAIL ratio_vs_Ascend310" in check.line() and "need >= 1.2" in check.line() and "001_" in check.line()


def test_mixed_clocks_are_refused() -> None:
    rule = PerfRule(baseline="T4", min_ratio=1.6)
    wall = [Figure("Ascend310P3", "resnext50_32x4d", 8, 5000.0, "per_card", "wall", "lab")]
    with pytest.raises(BaselineError, match="its baseline figures are single-stream, device_compute"):
        ratio_gate(rule, wall, CHIPS["Ascend310P3"], figures("T4", "resnext50_32x4d"), CHIPS["T4"])


@pytest.mark.parametrize(("text", "message"), [
    ("model,batch_size\nresnest50,1\n", "missing images_per_s, unit, clock"),
    (HEADER + "resnest50,1,100,per_socket,wall,x,\n", "unit must be one of"),
    (HEADER + "resnest50,1,100,per_chip,cpu_time,x,\n", "clock must be one of"),
    (HEADER + "resnest50,one,100,per_chip,wall,x,\n", "batch_size must be an integer"),
    (HEADER + "resnest50,1,-3,per_chip,wall,x,\n", "positive"),
    (HEADER + "resnest50,1,nan,per_chip,wall,x,\n", "positive"),
    (HEADER + "resnet9,1,100,per_chip,wall,x,\n", "unknown model 'resnet9'"),
    (HEADER + "resnest50,1,100,per_chip,wall,x,\nresnest50,1,200,per_chip,wall,y,\n",
     "second single-stream row for resnest50 bs1"),
    (HEADER + "resnest50,1,100,per_chip\n", "different length"),
])
def test_malformed_rows_name_the_line_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(BaselineError, match=message) as err:
        parse_csv(text, "T4", "lab.csv", MODELS)
    assert "lab.csv" in str(err.value)


SEED_004_SUMMARY = {  # seed 004 section 7.1: GhostNet bs16 on 310P, ais_infer sumary.json
    "NPU_compute_time": {"min": 3.8949999809265137, "max": 81.9729995727539, "mean": 4.652794558563232,
                         "median": 3.9760000705718994, "percentile(99%)": 9.564919853210439},
    "H2D_latency": {"min": 1.6279220581054688, "max": 43.206214904785156, "mean": 4.154865646362305,
                    "median": 1.985788345336914, "percentile(99%)": 18.392877578735302},
    "D2H_latency": {"min": 0.045299530029296875, "max": 17.41957664489746, "mean": 0.7445654296875,
                    "median": 0.10347366333007812, "percentile(99%)": 5.664710998535149},
    "throughput": 3438.7935677393734,
}


def test_ais_bench_summary_gives_a_device_clock_figure(tmp_path: Path) -> None:
    path = tmp_path / "2022_08_04-17_21_14_summary.json"
    path.write_text(json.dumps(SEED_004_SUMMARY))
    fig = parse_ais_bench_summary(path, "Ascend310P3", "ghostnet_100")
    assert fig.batch_size == 16  # implied by throughput x mean compute time
    assert fig.images_per_s == pytest.approx(3438.7936, abs=1e-4) and fig.clock == "device_compute"
    with pytest.raises(BaselineError, match="implies batch 16.000, not 8"):
        parse_ais_bench_summary(path, "Ascend310P3", "ghostnet_100", batch_size=8)
    path.write_text("{not json")
    with pytest.raises(BaselineError, match="cannot read an ais_bench summary"):
        parse_ais_bench_summary(path, "Ascend310P3", "ghostnet_100")


def test_measurement_directories_name_model_and_batch_in_the_path(tmp_path: Path) -> None:
    run = tmp_path / "lab"
    for bs, ms in ((8, 2.139), (16, 4.652794558563232)):
        d = run / "ghostnet_100" / f"bs{bs}" / "2022_08_04"
        d.mkdir(parents=True)
        (d / "2022_08_04_summary.json").write_text(
            json.dumps({"NPU_compute_time": {"mean": ms}, "throughput": 1000 * bs / ms})
        )
    figs = read_measurements(run, "Ascend310P3", MODELS)
    assert sorted((f.model, f.batch_size) for f in figs) == [("ghostnet_100", 8), ("ghostnet_100", 16)]
    stray = run / "unknown" / "x_summary.json"
    stray.parent.mkdir()
    stray.write_text(json.dumps(SEED_004_SUMMARY))
    with pytest.raises(BaselineError, match="no model name in its path"):
        read_measurements(run, "Ascend310P3", MODELS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaselineError, match="found neither"):
        read_measurements(tmp_path / "empty", "Ascend310P3", MODELS)


def test_save_baseline_merges_replaces_and_round_trips(tmp_path: Path) -> None:
    first = [
        Figure("cpu", "efficientnet_lite0", bs, ips, "per_chip", "wall", "night 1")
        for bs, ips in ((1, 240.5), (8, 290.25))
    ]
    path = save_baseline(first, "cpu", tmp_path, MODELS)
    second = [Figure("cpu", "efficientnet_lite0", 8, 301.125, "per_chip", "wall", "night 2"),
              Figure("cpu", "resnest50", 4, 20.0, "per_chip", "wall", "night 2")]
    save_baseline(second, "cpu", tmp_path, MODELS)
    back = {(f.model, f.batch_size): (f.images_per_s, f.source) for f in load_baselines("cpu", tmp_path, MODELS)}
    assert back == {("efficientnet_lite0", 1): (240.5, "night 1"), ("efficientnet_lite0", 8): (301.125, "night 2"),
                    ("resnest50", 4): (20.0, "night 2")}
    assert path.read_text().startswith(HEADER.rstrip("\n") + ",scenario\n") and not list(tmp_path.glob(".*tmp*"))


def test_the_scenario_column_is_optional_checked_and_part_of_a_rows_identity(tmp_path: Path) -> None:
    """Files from before --scenario hold single-stream figures; one model and batch may have both."""
    old = parse_csv(HEADER + "resnest50,1,100,per_chip,wall,x,\n", "cpu", "old.csv", MODELS)
    assert old[0].scenario == "single-stream"
    both = parse_csv(HEADER.rstrip("\n") + ",scenario\nresnest50,1,100,per_chip,wall,x,,single-stream\n"
                     "resnest50,1,160,per_chip,wall,x,,offline\n", "cpu", "both.csv", MODELS)
    assert [(f.scenario, f.images_per_s) for f in both] == [("single-stream", 100.0), ("offline", 160.0)]
    with pytest.raises(
        BaselineError, match=r"both.csv:2: scenario must be one of single-stream, offline, found 'server'"
    ):
        parse_csv(
            HEADER.rstrip("\n") + ",scenario\nresnest50,1,100,per_chip,wall,x,,server\n", "cpu", "both.csv", MODELS
        )
    save_baseline(both, "cpu", tmp_path, MODELS)
    save_baseline(
        [Figure("cpu", "resnest50", 1, 170.0, "per_chip", "wall", "y", scenario="offline")], "cpu", tmp_path, MODELS
    )
    back = {(f.scenario, f.images_per_s) for f in load_baselines("cpu", tmp_path, MODELS)}
    assert back == {("single-stream", 100.0), ("offline", 170.0)}
