"""TEST DOUBLE of ais_bench.infer.interface (see tests/doubles/README.md): runs the fake .om on ONNX Runtime.

``FAKE_AIS_BENCH_GENERATION`` (read at import) picks the API shape of one published generation:

- ``tools-2023``: Ascend's tools repository (ais-bench_workload/tool/ais_bench, 2022-2023):
  ``sumary()`` / ``reset_sumaryinfo()``, ``finalize(self)`` an instance method, no ``free_resource``,
  ``infer(feeds, mode, custom_sizes)``, ``exec_time_list`` of float ms.
- ``ait`` (default): the ait / msit benchmark (ait/components/benchmark/ais_bench): ``summary()`` /
  ``reset_summaryinfo()``, ``finalize()`` a staticmethod, ``free_resource()``,
  ``infer(feeds, mode, custom_sizes, out_array)``, ``exec_time_list`` of ``(start, end)`` ms pairs.

Both reproduce what aclruntime does to the process: finalize ends ACL for the whole process, and
no session can be opened or run after it (ACL is initialized once, by aclruntime's process-wide
TensorContext). ``FAKE_AIS_BENCH_LOG`` (a file) receives one JSON line per ``init``,
``free_resource`` and ``finalize``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import fake_om
import numpy as np

GENERATIONS = ("tools-2023", "ait")
GENERATION = os.environ.get("FAKE_AIS_BENCH_GENERATION", "ait")
if GENERATION not in GENERATIONS:
    raise ImportError(f"FAKE_AIS_BENCH_GENERATION={GENERATION!r}: the double knows {', '.join(GENERATIONS)}")

_ACL = {"finalized": False}  # aclruntime's process-wide state


def _log(event: str, **fields: object) -> None:
    path = os.environ.get("FAKE_AIS_BENCH_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"event": event, "generation": GENERATION, "pid": os.getpid(), **fields}) + "\n")


def _devices() -> set[int]:
    return {int(d) for d in os.environ.get("FAKE_NPU_DEVICES", "0,1").split(",") if d.strip()}


@dataclass
class TensorDesc:
    name: str
    shape: list
    datatype: str
    realsize: int
    size: int


@dataclass
class Summary:
    exec_time_list: list = field(default_factory=list)


class _Model:
    """The loaded .om (stands in for aclruntime.InferenceSession): static input check, AIPP, ORT run."""

    def __init__(self, device_id: int, model_path: str):
        if _ACL["finalized"]:
            raise RuntimeError(f"[ERROR] aclrtSetDevice failed, device_id {device_id}: ACL was finalized in this "
                               "process (ret=100001)")
        if device_id not in _devices():
            raise RuntimeError(f"[ERROR] aclrtSetDevice failed, device_id {device_id} (ret=107001)")
        header, onnx_bytes = fake_om.read(Path(model_path))
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.ort = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self.device_id = device_id
        self.freed = False
        self.zero_point = time.perf_counter()
        n, c, h, w = header["input_shape"]
        self.aipp = header["aipp"]
        if self.aipp:
            self.input = TensorDesc(header["input_name"], [n, h, w, c], "dtype.uint8", n * h * w * c, n * h * w * c)
        else:
            self.input = TensorDesc(
                header["input_name"], [n, c, h, w], "dtype.float32", n * c * h * w * 4, n * c * h * w
            )
        out = self.ort.get_outputs()[0]
        classes = int(out.shape[-1])
        self.output = TensorDesc(out.name, [n, classes], "dtype.float32", n * classes * 4, n * classes)
        _log("init", device=device_id, model=model_path)

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        a = self.aipp
        n, h, w, c = self.input.shape
        pixels = x.reshape(n, h, w, c).astype(np.float32)
        for i in range(c):
            pixels[..., i] = (pixels[..., i] - float(a.get(f"mean_chn_{i}", 0)) - float(a.get(f"min_chn_{i}", 0))) \
                * float(a.get(f"var_reci_chn_{i}", 1.0))
        return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))

    def run(self, feeds: list, mode: str) -> tuple[list[np.ndarray], float, float]:
        """Outputs, and start / end of the compute in ms since the model was loaded."""
        if self.freed or _ACL["finalized"]:
            raise RuntimeError("[ERROR] the model's resources were released (free_resource / finalize)")
        if mode != "static":
            raise RuntimeError(f"this double implements static models only, got mode {mode!r}")
        if len(feeds) != 1:
            raise RuntimeError("input datas and intensors nums not matched!")
        x = np.asarray(feeds[0])
        if x.nbytes != self.input.realsize:
            raise RuntimeError(
                f"[ERROR] input size mismatch: got {x.nbytes} bytes, model input needs {self.input.realsize}"
            )
        if self.aipp:
            if x.dtype != np.uint8:
                raise RuntimeError("AIPP input must be uint8")
            x = self._normalize(x)
        else:
            x = x.view(np.float32).reshape(self.input.shape) if x.dtype != np.float32 else x.reshape(self.input.shape)
        start = (time.perf_counter() - self.zero_point) * 1000.0
        (out,) = self.ort.run(None, {self.ort.get_inputs()[0].name: x})
        end = (time.perf_counter() - self.zero_point) * 1000.0
        return [np.asarray(out, dtype=np.float32)], start, end


if GENERATION == "tools-2023":

    class InferSession:
        """Ascend/tools ais_bench (interface.py of 2023-06): the shape of that API, methods and kinds."""

        def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                     loop: int = 1):
            self.device_id = device_id
            self.model_path = model_path
            self._model: _Model | None = _Model(device_id, model_path)
            self._summary = Summary()

        def _live(self) -> _Model:
            if self._model is None:
                raise RuntimeError("[ERROR] session was finalized")
            return self._model

        def get_inputs(self):
            return [self._live().input]

        def get_outputs(self):
            return [self._live().output]

        def infer(self, feeds, mode: str = "static", custom_sizes=100000):
            outputs, start, end = self._live().run(list(feeds), mode)
            self._summary.exec_time_list.append(end - start)  # float ms, as std::vector<float>
            return outputs

        def reset_sumaryinfo(self):
            self._summary = Summary()

        def sumary(self):  # the spelling of this generation; it has no summary()
            return self._summary

        def finalize(self):  # an INSTANCE method here: destroys this session, then ends ACL
            _log("finalize", device=self.device_id)
            if self._model is not None:
                self._model.freed = True
                self._model = None
            _ACL["finalized"] = True

else:

    class InferSession:  # type: ignore[no-redef]
        """ait / msit benchmark ais_bench: the shape of that API, methods and kinds."""

        def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                     loop: int = 1):
            self.device_id = device_id
            self.model_path = model_path
            self._model = _Model(device_id, model_path)
            self._summary = Summary()

        def get_inputs(self):
            return [self._model.input]

        def get_outputs(self):
            return [self._model.output]

        def infer(self, feeds, mode: str = "static", custom_sizes=100000, out_array: bool = True):
            outputs, start, end = self._model.run(list(feeds), mode)
            self._summary.exec_time_list.append((start, end))  # (start, end) ms pairs
            return outputs

        def reset_summaryinfo(self):
            self._summary = Summary()

        def summary(self):
            return self._summary

        def free_resource(self):
            _log("free_resource", device=self.device_id)
            self._model.freed = True

        @staticmethod
        def finalize():
            _log("finalize")
            _ACL["finalized"] = True
