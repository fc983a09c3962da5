"""TEST DOUBLE of ais_bench.infer.interface (see tests/doubles/README.md): runs the fake .om on ONNX Runtime."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import fake_om


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


def _devices() -> set[int]:
    return {int(d) for d in os.environ.get("FAKE_NPU_DEVICES", "0,1").split(",") if d.strip()}


class InferSession:
    def __init__(self, device_id: int, model_path: str, acl_json_path: str | None = None, debug: bool = False,
                 loop: int = 1):
        if device_id not in _devices():
            raise RuntimeError(f"[ERROR] aclrtSetDevice failed, device_id {device_id} (ret=107001)")
        header, onnx_bytes = fake_om.read(Path(model_path))
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self._ort = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self._header = header
        self._summary = Summary()
        self._freed = False
        n, c, h, w = header["input_shape"]
        self._aipp = header["aipp"]
        if self._aipp:
            self._in = TensorDesc(header["input_name"], [n, h, w, c], "dtype.uint8", n * h * w * c, n * h * w * c)
        else:
            self._in = TensorDesc(header["input_name"], [n, c, h, w], "dtype.float32", n * c * h * w * 4, n * c * h * w)
        out = self._ort.get_outputs()[0]
        classes = int(out.shape[-1])
        self._out = TensorDesc(out.name, [n, classes], "dtype.float32", n * classes * 4, n * classes)

    def get_inputs(self):
        return [self._in]

    def get_outputs(self):
        return [self._out]

    def _normalize(self, x: np.ndarray) -> np.ndarray:
        a = self._aipp
        n, h, w, c = self._in.shape
        pixels = x.reshape(n, h, w, c).astype(np.float32)
        for i in range(c):
            pixels[..., i] = (pixels[..., i] - float(a.get(f"mean_chn_{i}", 0)) - float(a.get(f"min_chn_{i}", 0))) \
                * float(a.get(f"var_reci_chn_{i}", 1.0))
        return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))

    def infer(self, feeds, mode: str = "static", custom_sizes=100000, out_array: bool = True):
        if self._freed:
            raise RuntimeError("[ERROR] session resources were freed")
        if mode != "static":
            raise RuntimeError(f"this double implements static models only, got mode {mode!r}")
        if len(feeds) != 1:
            raise RuntimeError("input datas and intensors nums not matched!")
        x = np.asarray(feeds[0])
        if x.nbytes != self._in.realsize:
            raise RuntimeError(f"[ERROR] input size mismatch: got {x.nbytes} bytes, model input needs {self._in.realsize}")
        if self._aipp:
            if x.dtype != np.uint8:
                raise RuntimeError("AIPP input must be uint8")
            x = self._normalize(x)
        else:
            x = x.view(np.float32).reshape(self._in.shape) if x.dtype != np.float32 else x.reshape(self._in.shape)
        t0 = time.perf_counter()
        (out,) = self._ort.run(None, {self._ort.get_inputs()[0].name: x})
        self._summary.exec_time_list.append((time.perf_counter() - t0) * 1000.0)
        return [np.asarray(out, dtype=np.float32)]

    def sumary(self):  # the spelling of ais_bench <= 0.0.2
        return self._summary

    def summary(self):
        return self._summary

    def reset_sumaryinfo(self):
        self._summary = Summary()

    def free_resource(self):
        self._freed = True

    @staticmethod
    def finalize():
        pass
