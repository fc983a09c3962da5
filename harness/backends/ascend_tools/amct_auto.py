"""The way back to float on Ascend: AMCT's accuracy-based auto calibration (``amct_onnx`` Python API).

No AMCT, CANN or NPU exists where this was written: everything here follows AMCT's documented
contract and is tested against the test double ``tests/doubles/amct_onnx/`` (tests/doubles/README.md).

Sources read (CANN AMCT user guide, "AMCT (ONNX)" API pages under https://www.hiascend.com/document/detail/):

- ``accuracy_based_auto_calibration`` (``en/canncommercial/800/devaids/amct/atlasamct_16_0156.html``, the same
  in 850 and 900; ``zh/CANNCommunityEdition/80RC3alpha002/devaids/auxiliarydevtool/atlasamctonnx_16_0053.html``):
  ``accuracy_based_auto_calibration(model_file, model_evaluator, config_file, record_file, save_dir,
  strategy='BinarySearch', sensitivity='CosineSimilarity')``, returns nothing; ``save_dir`` is a path
  with the model-name prefix; it writes the fake-quant model (ONNX Runtime accuracy simulation) and the
  deploy model (for ATC), the quantization factors in ``record_file``, a sensitivity file, and an
  auto-calibration history file naming the layers rolled back;
- the workflow (``atlasamct_16_0046.html``, ``atlasamct_16_0170.html``): ``create_quant_config`` first, the
  evaluator scores the original model, then the fully quantized one; while the drop is not accepted,
  layers are rolled back to float by their quantization sensitivity (cosine similarity, binary search);
- ``create_quant_config(config_file, model_file, skip_layers=None, batch_num=1, activation_offset=True,
  config_defination=None, updated_model=None)`` (``atlasamct_16_0153.html``, ``atlasamctonnx_16_0050.html``):
  writes the JSON config, one entry per quantizable layer (``quant_enable``);
- the evaluator (the sample on page 0053 and github.com/Ascend/samples
  ``python/level1_single_api/9_amct/amct_onnx/mobilenet_v2/src/mobilenet_v2_accuracy_based_auto_calibration.py``):
  a subclass of ``amct_onnx.common.auto_calibration.AutoCalibrationEvaluatorBase`` with
  ``calibration(model_file)`` (runs at least ``batch_num`` batches through the ONNX AMCT gives it, on
  ONNX Runtime with ``amct_onnx.AMCT_SO``, AMCT's custom-operator session options), ``evaluate(model_file)``
  (the model's metric) and ``metric_eval(original_metric, new_metric) -> (bool, float)`` (accepted, loss);
- the outputs' names and format, from AMCT's source (github.com/hicann/amct, ``common/auto_calibration/
  accuracy_based_auto_calibration_base.py``, ``binary_search_strategy.py``, ``auto_calibration_evaluator_base.py``)
  and the sample's README_CN.md: ``amct_log/accuracy_based_auto_calibration_record.json`` under the
  working directory, JSON objects written one after another (no list), each ``{"roll_back_config":
  {layer: true (quantized) | false (rolled back)}, "metric_eval": [accepted, loss]}``, the last one the
  saved model's; ``accuracy_based_auto_calibration_ranking_information.json`` and ``..._final_config.json``
  beside ``save_dir``; when every layer is rolled back no model is written. AMCT refuses an evaluator
  whose ``metric_eval(original, original)`` is not accepted.

What runs here: AMCT in a child process (``python -m harness.backends.ascend_tools.amct_auto WORK``, with
``WORK`` as its working directory, where AMCT writes ``amct_log/``), so the harness never imports
``amct_onnx`` itself; a missing ``amct_onnx`` is exit status 3 there and a BackendUnavailable here. The
calibration images are the .bin files :func:`harness.backends.ascend_tools.amct.write_calibration` writes
(normalized float32, one image each, ``batch_num`` = their count); the scored images are uint8 pixels
normalized per batch. Accepted: a top-1 drop of at most ``max_drop`` points (the policy's tolerance).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from harness.backends.ascend_tools import amct
from harness.backends.ascend_tools.tools import ToolError, run_tool
from harness.backends.base import BackendUnavailable
from harness.backends.quantization import QuantizationError

JOB_FILE = "job.json"
PIXELS_FILE = "scored_pixels.npy"
LABELS_FILE = "scored_labels.npy"
EVALUATIONS_FILE = "evaluations.jsonl"  # one line per evaluate() call: the model and its top-1
CONFIG_FILE = "quant_config.json"
RECORD_FILE = "scale_offset_record.txt"
SAVE_DIR = "result/model"
HISTORY_FILE = "amct_log/accuracy_based_auto_calibration_record.json"
RANKING_FILE = "accuracy_based_auto_calibration_ranking_information.json"
FINAL_CONFIG_FILE = "accuracy_based_auto_calibration_final_config.json"
EXIT_NO_AMCT = 3
EVAL_BATCH = 32


def session(path: Path | str, threads: int | None, options: Any = None) -> Any:
    """An ONNX Runtime CPU session; ``options``: AMCT's ``AMCT_SO`` in the child (its custom operators)."""
    import onnxruntime as ort

    opts = options if options is not None else ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types
        raise QuantizationError(f"ONNX Runtime could not load {Path(path).name}: {type(exc).__name__}: {exc}; "
                                "AMCT documents its fake-quant model as runnable on ONNX Runtime") from exc


class Evaluator:
    """The evaluator AMCT's auto calibration calls (the child makes it an ``AutoCalibrationEvaluatorBase``).

    ``calibration(model_file)``: every calibration .bin file (one normalized float32 image) through the
    model, one batch each; ``evaluate(model_file)``: top-1 (a fraction) on the scored images;
    ``metric_eval(original, new)``: accepted when the top-1 drop is at most ``max_drop`` points."""

    def __init__(self, input_name: str, calibration_dir: Path, pixels: np.ndarray, labels: np.ndarray,
                 mean: Sequence[float], std: Sequence[float], max_drop: float, threads: int | None = None,
                 options: Callable[[], Any] | None = None, log: Path | None = None):
        super().__init__()  # AutoCalibrationEvaluatorBase's, when the child mixes it in
        self.input_name, self.calibration_dir = input_name, Path(calibration_dir)
        self.pixels, self.labels = pixels, np.asarray(labels)
        self.mean, self.std, self.max_drop, self.threads = tuple(mean), tuple(std), float(max_drop), threads
        self.options, self.log = options, log

    def _session(self, model_file: str) -> Any:
        return session(model_file, self.threads, self.options() if self.options else None)

    def calibration(self, model_file: str) -> None:
        run = self._session(model_file)
        files = sorted(self.calibration_dir.glob("*.bin"))
        shape = tuple(int(v) for v in self.pixels.shape[1:])
        for f in files:
            run.run(None, {self.input_name: np.fromfile(f, dtype=np.float32).reshape((1, *shape))})

    def logits(self, model_file: str) -> np.ndarray:
        """The model's logits on every scored image, in order."""
        from harness.data import normalize

        run = self._session(model_file)
        dim = run.get_inputs()[0].shape[0]
        batch = dim if isinstance(dim, int) and dim > 0 else EVAL_BATCH
        out = []
        for start in range(0, len(self.pixels), batch):
            images = normalize(np.asarray(self.pixels[start:start + batch]), self.mean, self.std)
            out.append(np.asarray(run.run(None, {self.input_name: images})[0]))
        return np.concatenate(out)

    def evaluate(self, model_file: str) -> float:
        top1 = float((self.logits(model_file).argmax(axis=1) == self.labels).mean())
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"model": Path(model_file).name, "top1": round(100 * top1, 4)}) + "\n")
        return top1

    def metric_eval(self, original_metric: float, new_metric: float) -> tuple[bool, float]:
        loss = float(original_metric) - float(new_metric)
        return loss * 100.0 <= self.max_drop + 1e-9, loss

    @classmethod
    def from_job(cls, work: Path, options: Callable[[], Any] | None = None, log: bool = False) -> Evaluator:
        job = json.loads((work / JOB_FILE).read_text())
        return cls(job["input"], work / amct.DATA_DIR, np.load(work / PIXELS_FILE, mmap_mode="r"),
                   np.load(work / LABELS_FILE), job["mean"], job["std"], job["max_drop"], job["threads"],
                   options, work / EVALUATIONS_FILE if log else None)


def history(path: Path) -> list[dict[str, Any]]:
    """AMCT's auto-calibration history: the JSON objects written one after another."""
    text, decoder, at = path.read_text(), json.JSONDecoder(), 0
    records: list[dict[str, Any]] = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return records
        try:
            record, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as exc:
            raise QuantizationError(f"{path}: not AMCT's history format (JSON objects one after another): {exc}") \
                from exc
        if not isinstance(record, dict) or not isinstance(record.get("roll_back_config"), dict):
            raise QuantizationError(f"{path}: a record without roll_back_config ({str(record)[:120]})")
        records.append(record)


def rolled_back(records: Sequence[dict[str, Any]], order: Sequence[str] = ()) -> tuple[str, ...]:
    """The layers the saved model keeps in float (false in the last record), in ``order`` (graph order)."""
    if not records:
        return ()
    names = [name for name, quantized in records[-1]["roll_back_config"].items() if not quantized]
    rank = {n: i for i, n in enumerate(order)}
    return tuple(sorted(names, key=lambda n: rank.get(n, len(rank))))


@dataclass(frozen=True)
class AutoCalibration:
    """What AMCT's auto calibration did: the layers it rolled back (ONNX node names, graph order), its
    fake-quant model (None: every layer rolled back, no model written), that model's logits and top-1
    (percent, ONNX Runtime CPU) on the scored images, the evaluator's calls and the history's records."""

    rolled_back: tuple[str, ...]
    fake_quant: Path | None
    logits: np.ndarray | None
    top1: float | None
    evaluations: tuple[dict[str, Any], ...]
    steps: int
    seconds: float


def run(source: Path, calibration: Iterable[np.ndarray], pixels: np.ndarray, labels: np.ndarray,
        mean: Sequence[float], std: Sequence[float], skip_layers: Sequence[str], max_drop: float, work: Path,
        threads: int | None = None, timeout: float = 3600.0) -> AutoCalibration:
    """AMCT's accuracy-based auto calibration of ``source`` in a child process working in ``work``."""
    started = time.perf_counter()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(source), load_external_data=False)
    input_name, chw = amct.model_input(model)
    count = amct.write_calibration(calibration, work / amct.DATA_DIR, chw)
    shutil.copyfile(source, work / amct.MODEL_FILE)
    np.save(work / PIXELS_FILE, np.asarray(pixels))
    np.save(work / LABELS_FILE, np.asarray(labels))
    job = {"input": input_name, "batch_num": count, "skip_layers": list(skip_layers), "max_drop": float(max_drop),
           "mean": list(mean), "std": list(std), "threads": threads}
    (work / JOB_FILE).write_text(json.dumps(job, indent=1))
    command = [sys.executable, "-m", __name__, str(work.resolve())]
    try:
        run_tool(command, timeout=timeout, hint=amct.INSTALL_HINT, cwd=work,
                 what=f"AMCT accuracy-based auto calibration of {Path(source).name}")
    except ToolError as exc:
        if exc.returncode == EXIT_NO_AMCT:
            lines = exc.stderr.strip().splitlines()
            hint = lines[-1] if lines else f"amct_onnx is not importable: {amct.INSTALL_HINT}"
            raise BackendUnavailable(hint) from exc
        raise QuantizationError(f"{exc}\n  AMCT's own log: {work / 'amct_log'}") from exc
    records = history(work / HISTORY_FILE) if (work / HISTORY_FILE).is_file() else []
    if not records:
        raise QuantizationError(f"AMCT's auto calibration wrote no history in {work / HISTORY_FILE}: expected "
                                "amct_log/accuracy_based_auto_calibration_record.json under its working directory")
    layers = rolled_back(records, [n.name for n in model.graph.node])
    fake = work / (SAVE_DIR + amct.FAKE_QUANT_SUFFIX)
    evaluations = tuple(json.loads(line) for line in (work / EVALUATIONS_FILE).read_text().splitlines()
                        if line.strip()) if (work / EVALUATIONS_FILE).is_file() else ()
    if not fake.is_file():
        return AutoCalibration(layers, None, None, None, evaluations, len(records), time.perf_counter() - started)
    logits = Evaluator.from_job(work).logits(str(fake))
    top1 = float((logits.argmax(axis=1) == np.asarray(labels)).mean() * 100)
    return AutoCalibration(layers, fake, logits, top1, evaluations, len(records), time.perf_counter() - started)


def _child(work: Path) -> int:
    """In the child: create_quant_config, then accuracy_based_auto_calibration with the evaluator."""
    try:  # AMCT ships no type information
        amct_onnx = importlib.import_module("amct_onnx")
        base = importlib.import_module("amct_onnx.common.auto_calibration").AutoCalibrationEvaluatorBase
    except ImportError as exc:
        print(f"AMCT's Python package is not importable ({exc}): {amct.INSTALL_HINT}, and `import amct_onnx` works",
              file=sys.stderr)
        return EXIT_NO_AMCT
    job = json.loads((work / JOB_FILE).read_text())
    options = getattr(amct_onnx, "AMCT_SO", None)
    evaluator_class: Any = type("HarnessEvaluator", (Evaluator, base), {})
    evaluator = evaluator_class.from_job(work, (lambda: options) if options is not None else None, log=True)
    Path(SAVE_DIR).parent.mkdir(parents=True, exist_ok=True)
    amct_onnx.create_quant_config(config_file=CONFIG_FILE, model_file=amct.MODEL_FILE,
                                  skip_layers=job["skip_layers"], batch_num=job["batch_num"], activation_offset=True)
    amct_onnx.accuracy_based_auto_calibration(model_file=amct.MODEL_FILE, model_evaluator=evaluator,
                                              config_file=CONFIG_FILE, record_file=RECORD_FILE, save_dir=SAVE_DIR,
                                              strategy="BinarySearch", sensitivity="CosineSimilarity")
    return 0


if __name__ == "__main__":
    os.chdir(sys.argv[1])
    sys.exit(_child(Path(".")))
