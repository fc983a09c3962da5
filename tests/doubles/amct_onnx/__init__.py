"""TEST DOUBLE of AMCT's Python API for ONNX (``import amct_onnx``; tests/doubles/README.md). It is not AMCT.

Implements the shape of the documented API (sources in harness/backends/ascend_tools/amct_auto.py):
``create_quant_config(config_file, model_file, skip_layers=None, batch_num=1, activation_offset=True,
config_defination=None, updated_model=None)`` writes a JSON config with one ``quant_enable`` entry per
Conv / Gemm / MatMul; ``accuracy_based_auto_calibration(model_file, model_evaluator, config_file,
record_file, save_dir, strategy='BinarySearch', sensitivity='CosineSimilarity')`` checks the evaluator is an
``AutoCalibrationEvaluatorBase`` implementing ``calibration`` / ``evaluate`` / ``metric_eval``, refuses a
``metric_eval(original, original)`` that is not accepted (as AMCT does), and runs the evaluator's calibration
on a copy of the float model (AMCT's would carry its calibration operators), which must be opened with
``AMCT_SO`` and fed at least ``batch_num`` batches: the batches it feeds are the calibration data.

Not AMCT's algorithm: quantization is ONNX Runtime's QDQ (MinMax, per-channel weights, shared with the
command double, fake_amct_onnx.quantize_batches), and while ``metric_eval`` is not accepted the double rolls
back the next quantized layer in graph order (no cosine similarity, no binary search); its "ranking"
file holds that order as the value, not a similarity. Outputs are written where and as AMCT writes them:
``<save_dir>_fake_quant_model.onnx`` and ``<save_dir>_deploy_model.onnx`` (the same QDQ model), ``record_file``
(a placeholder), the ranking and final-config files beside ``save_dir``, and the history
``amct_log/accuracy_based_auto_calibration_record.json`` under the working directory (JSON objects one after
another, ``roll_back_config`` / ``metric_eval``); with every layer rolled back no model is written.
``FAKE_AMCT_LOG``: each call appends one JSON line (the API and its arguments).
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
from amct_onnx.common.auto_calibration import AutoCalibrationEvaluatorBase
from fake_amct_onnx import quantize_batches

AMCT_SO = onnxruntime.SessionOptions()  # AMCT's session options with its custom operators; the double has none
QUANTIZABLE = ("Conv", "Gemm", "MatMul")
HISTORY = Path("amct_log") / "accuracy_based_auto_calibration_record.json"
RANKING = "accuracy_based_auto_calibration_ranking_information.json"
FINAL_CONFIG = "accuracy_based_auto_calibration_final_config.json"
__version__ = "0.0.0+testdouble"


def _log(api: str, **args) -> None:
    if log := os.environ.get("FAKE_AMCT_LOG"):
        with open(log, "a") as fh:
            fh.write(json.dumps({"api": api, **args}, default=str) + "\n")


def _load(model_file):
    import onnx

    path = Path(model_file)
    if path.suffix != ".onnx" or not path.is_file():
        raise RuntimeError(f"[AMCT double] model_file {model_file}: no such .onnx file")
    model = onnx.load(str(path))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if not 8 <= opset <= 14:
        raise RuntimeError(f"[AMCT double] opset {opset}; AMCT supports ai.onnx opsets 8-14")
    return model


def create_quant_config(config_file, model_file, skip_layers=None, batch_num=1, activation_offset=True,
                        config_defination=None, updated_model=None):
    _log("create_quant_config", config_file=config_file, model_file=model_file, skip_layers=skip_layers,
         batch_num=batch_num, activation_offset=activation_offset)
    if config_defination is not None or updated_model is not None:
        raise RuntimeError("[AMCT double] config_defination / updated_model are not implemented by the double")
    if not isinstance(batch_num, int) or isinstance(batch_num, bool) or batch_num < 1:
        raise ValueError(f"[AMCT double] batch_num must be an integer > 0, got {batch_num!r}")
    if not isinstance(activation_offset, bool):
        raise TypeError(f"[AMCT double] activation_offset must be a bool, got {activation_offset!r}")
    model = _load(model_file)
    skip = list(skip_layers or [])
    unknown = sorted(set(skip) - {n.name for n in model.graph.node})
    if unknown:  # stricter than documented: a typo would quietly quantize the layer
        raise ValueError(f"[AMCT double] skip_layers {unknown} are not layers of the model")
    config = {"version": 1, "batch_num": batch_num, "activation_offset": activation_offset, "do_fusion": True,
              "skip_fusion_layers": []}
    for node in model.graph.node:
        if node.op_type in QUANTIZABLE:
            config[node.name] = {"quant_enable": node.name not in skip,
                                 "activation_quant_params": {"num_bits": 8, "act_algo": "ifmr"},
                                 "weight_quant_params": {"num_bits": 8, "wts_algo": "arq_quantize",
                                                         "channel_wise": True}}
    Path(config_file).parent.mkdir(parents=True, exist_ok=True)
    Path(config_file).write_text(json.dumps(config, indent=4, separators=(",", ":")))


def _calibrate(evaluator, model_file, temp: Path, batch_num: int) -> list:
    """The evaluator's calibration() on the double's "modified model"; the feeds it ran, checked."""
    modified = temp / "modified_model.onnx"
    shutil.copyfile(model_file, modified)
    fed, options = [], []
    init, run = onnxruntime.InferenceSession.__init__, onnxruntime.InferenceSession.run

    def spy_init(self, path_or_bytes, sess_options=None, *args, **kwargs):
        options.append(sess_options)
        init(self, path_or_bytes, sess_options, *args, **kwargs)

    def spy_run(self, output_names, input_feed, run_options=None):
        fed.append({k: np.array(v) for k, v in input_feed.items()})
        return run(self, output_names, input_feed, run_options)

    onnxruntime.InferenceSession.__init__, onnxruntime.InferenceSession.run = spy_init, spy_run
    try:
        evaluator.calibration(str(modified))
    finally:
        onnxruntime.InferenceSession.__init__, onnxruntime.InferenceSession.run = init, run
    if not options or any(o is not AMCT_SO for o in options):
        raise RuntimeError("[AMCT double] calibration() must open the model with amct_onnx.AMCT_SO as its session "
                           "options (AMCT's calibration operators)")
    if len(fed) < batch_num:
        raise RuntimeError(f"[AMCT double] calibration() ran {len(fed)} batch(es); create_quant_config's batch_num "
                           f"is {batch_num}: the inference batch num needs to be >= batch_num")
    return fed[:batch_num]


def _metric(evaluator, original, new) -> list:
    result = evaluator.metric_eval(original, new)
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], (bool, np.bool_))):
        raise TypeError(f"[AMCT double] metric_eval must return (bool, float), got {result!r}")
    return [bool(result[0]), float(result[1])]


def accuracy_based_auto_calibration(model_file, model_evaluator, config_file, record_file, save_dir,
                                    strategy="BinarySearch", sensitivity="CosineSimilarity"):
    _log("accuracy_based_auto_calibration", model_file=model_file, config_file=config_file, record_file=record_file,
         save_dir=save_dir, strategy=strategy, sensitivity=sensitivity)
    if not isinstance(model_evaluator, AutoCalibrationEvaluatorBase):
        raise RuntimeError("the model evaluator is not inherited from base class AutoCalibrationEvaluatorBase")
    for method in ("calibration", "evaluate", "metric_eval"):
        if getattr(type(model_evaluator), method) is getattr(AutoCalibrationEvaluatorBase, method):
            raise NotImplementedError(f"[AMCT double] the evaluator does not implement {method}()")
    if strategy != "BinarySearch" or sensitivity != "CosineSimilarity":
        raise RuntimeError("[AMCT double] only strategy='BinarySearch' and sensitivity='CosineSimilarity' are doubled")
    _load(model_file)
    config = json.loads(Path(config_file).read_text())
    layers = [k for k, v in config.items() if isinstance(v, dict) and v.get("quant_enable")]
    skipped = [k for k, v in config.items() if isinstance(v, dict) and not v.get("quant_enable")]
    save = Path(save_dir)
    save.parent.mkdir(parents=True, exist_ok=True)
    temp = save.parent / "temp_double"
    temp.mkdir(exist_ok=True)
    fake, deploy = Path(f"{save}_fake_quant_model.onnx"), Path(f"{save}_deploy_model.onnx")

    original = model_evaluator.evaluate(model_file)
    if not _metric(model_evaluator, original, original)[0]:
        raise ValueError("Compare between original_accuracy and original_accuracy can not satisfy the acc requirement, "
                         "please check the metric_eval() function.")

    def attempt(rolled: list) -> list:
        batches = _calibrate(model_evaluator, model_file, temp, config["batch_num"])
        quantize_batches(Path(model_file), batches, True, config["activation_offset"], skipped + rolled, fake)
        shutil.copyfile(fake, deploy)
        return _metric(model_evaluator, original, model_evaluator.evaluate(str(fake)))

    rolled: list = []
    metric = attempt(rolled)
    records = [{"roll_back_config": {name: True for name in layers}, "metric_eval": metric}]
    while not metric[0] and len(rolled) < len(layers):
        rolled.append(layers[len(rolled)])
        if len(rolled) == len(layers):  # everything float: AMCT keeps no model
            metric = _metric(model_evaluator, original, original)
            records.append({"roll_back_config": {name: False for name in layers}, "metric_eval": metric})
            fake.unlink(missing_ok=True)
            deploy.unlink(missing_ok=True)
            break
        metric = attempt(rolled)
        records.append({"roll_back_config": {name: name not in rolled for name in layers}, "metric_eval": metric})
    (save.parent / RANKING).write_text(json.dumps([[name, i / max(len(layers), 1)] for i, name in enumerate(layers)],
                                                  indent=4, separators=(",", ":")))
    HISTORY.parent.mkdir(exist_ok=True)
    HISTORY.write_text("".join(json.dumps(r, indent=4, separators=(",", ":")) for r in records))
    (HISTORY.parent / "amct_onnx.log").write_text(f"TEST DOUBLE amct_onnx: {len(records)} record(s)\n")
    if fake.is_file():
        final = {**config, **{name: {**config[name], "quant_enable": records[-1]["roll_back_config"][name]}
                              for name in layers}}
        (save.parent / FINAL_CONFIG).write_text(json.dumps(final, indent=4, separators=(",", ":")))
        Path(record_file).write_text("# TEST DOUBLE: no AMCT scale/offset record\n")
    shutil.rmtree(temp)
