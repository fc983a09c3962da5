"""Huawei Ascend 310 / 310P3: ATC compiles the ONNX to an .om, ais_bench's Python API runs it.

Compile: the seeds' ATC command (:mod:`harness.atc`) as an argument list, run with a time limit;
its output goes into the error when it fails, and the command (with placeholders for the paths)
and the AIPP config are part of the compiled model's cache key and manifest
(:meth:`AscendBackend.compile_key`).

Run: ``ais_bench.infer.interface.InferSession(device_id, model_path)``; ``infer([batch],
mode="static")`` returns the outputs as numpy arrays; the session's summary
(``summary()``, ``sumary()`` in older ais_bench) lists every run's NPU compute time in ms
(``exec_time_list``), which :meth:`AscendSession.compute_times_ms` hands to the timing loop: the
``device_compute`` clock is ais_bench's own throughput (``1000 * batch / mean compute ms``); the
wall clock is recorded beside it. An .om has a static batch: a short last batch is padded by
repeating its last image, and the padding's outputs are dropped.

With ``aipp`` in the target's options (``--input uint8`` on an Ascend chip) normalization is
compiled in through ATC's AIPP: the .om takes uint8 RGB pixels packed NHWC, and the session
transposes the uint8 NCHW cache batches to that layout.

Verified against the documented contracts only (the ATC and ais_bench guides, the seeds'
commands), through the test doubles in tests/doubles/: no NPU was available where this was
written. See docs/ascend.md.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from harness import atc
from harness.backends.base import BackendUnavailable, DeviceBusy, InferenceError, check_batch, check_logits
from harness.environment import cann_version, installed_version
from harness.specs import CompileTarget
from harness.tools import ToolNotFound, run_tool

OM_STEM = "model"
AIPP_FILE = "aipp.cfg"
COMMAND_FILE = "atc_command.json"
AIS_BENCH_HINT = (
    "install ais_bench and aclruntime: the wheels from https://gitee.com/ascend/tools "
    "(ais-bench_workload/tool/ais_bench), `pip install aclruntime-*.whl ais_bench-*.whl`, on a host with "
    "the Ascend driver and CANN"
)
_FINALIZE_REGISTERED = False


def _cann_version() -> str:
    return cann_version() or "unknown"


def _ais_bench_version() -> str:
    found = installed_version("ais_bench", "ais-bench")
    return found[1] if found else "unknown"


def _exec_times_ms(summary: Any) -> list[float]:
    """``exec_time_list`` as milliseconds: floats, or (start, end) pairs in newer aclruntime."""
    times = []
    for item in list(getattr(summary, "exec_time_list", [])):
        if isinstance(item, (tuple, list)):
            start, end = item[0], item[-1]
            times.append(float(end) - float(start))
        else:
            times.append(float(item))
    return times


class AscendSession:
    """One loaded .om on one device (ais_bench InferSession), static batch, padded short batches."""

    def __init__(self, infer_session: Any, target: CompileTarget, num_classes: int, aipp: bool, where: str):
        self._s = infer_session
        self.batch_size = target.batch_size
        self.shape = tuple(target.input_shape)
        self.num_classes = num_classes
        self.aipp = aipp
        self.input_dtype = np.uint8 if aipp else np.float32
        self.where = where
        self._check_io()

    def _check_io(self) -> None:
        inputs = list(self._s.get_inputs())
        if len(inputs) != 1:
            raise InferenceError(f"{self.where}: the .om has {len(inputs)} inputs; expected one image input")
        c, h, w = self.shape
        itemsize = 1 if self.aipp else 4
        expected = self.batch_size * c * h * w * itemsize
        realsize = getattr(inputs[0], "realsize", expected)
        if int(realsize) != expected:
            raise InferenceError(
                f"{self.where}: the .om input {getattr(inputs[0], 'name', '?')} takes {realsize} bytes, expected "
                f"{expected} (batch {self.batch_size} x {c}x{h}x{w} {'uint8 (AIPP)' if self.aipp else 'float32'}); "
                "was it compiled for another batch size or input?"
            )

    def infer(self, batch: np.ndarray) -> np.ndarray:
        check_batch(batch, self.batch_size, self.shape, self.where, self.input_dtype)
        n = batch.shape[0]
        if n < self.batch_size:  # static batch: repeat the last image; its outputs are dropped below
            pad = np.repeat(batch[-1:], self.batch_size - n, axis=0)
            batch = np.concatenate([batch, pad], axis=0)
        x = batch.transpose(0, 2, 3, 1) if self.aipp else batch
        try:
            outputs = self._s.infer([np.ascontiguousarray(x)], mode="static")
        except Exception as exc:  # aclruntime raises RuntimeError with the ACL error code
            raise InferenceError(f"{self.where}: ais_bench inference failed: {type(exc).__name__}: {exc}") from exc
        if not outputs:
            raise InferenceError(f"{self.where}: ais_bench returned no outputs")
        out = np.asarray(outputs[0])
        if out.size != self.batch_size * self.num_classes:
            raise InferenceError(
                f"{self.where}: expected {self.batch_size} x {self.num_classes} logits from the first output, got "
                f"shape {tuple(out.shape)}; is this a classifier with {self.num_classes} classes?"
            )
        out = out.reshape(self.batch_size, self.num_classes)[:n]
        if out.dtype == np.float16:
            out = out.astype(np.float32)
        return check_logits(out, n, self.num_classes, self.where)

    def compute_times_ms(self) -> Sequence[float]:
        """NPU compute time of every run since the session opened (ais_bench's exec_time_list)."""
        summary = getattr(self._s, "summary", None) or getattr(self._s, "sumary")
        return _exec_times_ms(summary())


class AscendBackend:
    """ATC + ais_bench. Options (``backend_options`` in fixtures/chips.toml, strings):

    - ``soc_version``: ATC ``--soc_version`` (``Ascend310``, ``Ascend310P3``).
    - ``precision_mode``: ATC ``--precision_mode``; default from the target precision
      (fp16: ATC's default; fp32: ``force_fp32``).
    - ``log``: ATC ``--log`` level (default ``error``).
    - ``atc_timeout``: seconds before a hung ATC is killed (default 3600).
    - ``check_device``: ``false`` skips the npu-smi idle/health check before timing.
    """

    name: ClassVar[str] = "ascend"
    handles_uint8_input: ClassVar[bool] = True  # AIPP: --input uint8 keeps the float ONNX

    def __init__(
        self,
        threads: int | str | None = None,  # host threads do not apply: the NPU runs the model
        soc_version: str = "Ascend310P3",
        precision_mode: str | None = None,
        log: str = "error",
        atc_timeout: float | str = 3600.0,
        check_device: bool | str = True,
    ):
        self.soc_version = soc_version
        self.precision_mode = precision_mode or None
        self.log = log
        self.atc_timeout = float(atc_timeout)
        self.check_device = str(check_device).lower() not in ("0", "false", "no", "off")
        self.device_checks: dict[int, str] = {}

    # -- availability and identity ----------------------------------------------------------------

    def unavailable_reason(self) -> str | None:
        missing = []
        if shutil.which("atc") is None:
            missing.append(f"`atc` is not on PATH ({atc.INSTALL_HINT})")
        if importlib.util.find_spec("ais_bench") is None:
            missing.append(f"ais_bench is not installed ({AIS_BENCH_HINT})")
        if missing:
            return f"Ascend backend ({self.soc_version}) unavailable: " + "; ".join(missing)
        return None

    def version(self) -> str:
        return f"CANN {_cann_version()}, ais_bench {_ais_bench_version()}"

    def compile_fields(self) -> Mapping[str, str]:
        return {
            "cann": _cann_version(),
            "atc": shutil.which("atc") or "absent",
            "soc_version": self.soc_version,
            "log": self.log,
        }

    def _aipp_text(self, target: CompileTarget) -> str | None:
        if target.options.get("aipp") != "static":
            return None
        mean = [float(v) for v in target.options["mean"].split(",")]
        std = [float(v) for v in target.options["std"].split(",")]
        return atc.aipp_config(target.input_shape, mean, std)

    def _command(self, target: CompileTarget, onnx: str, output: str, aipp_path: str | None) -> list[str]:
        mode = atc.precision_mode_for(target.precision, self.precision_mode)
        return atc.atc_command(onnx, output, target, self.soc_version, self.log, mode, aipp_path)

    def compile_key(self, target: CompileTarget) -> dict[str, Any]:
        """The full ATC command (paths as placeholders) and the AIPP config: cache key and manifest."""
        aipp = self._aipp_text(target)
        return {
            "atc_command": self._command(target, "<onnx>", f"<dir>/{OM_STEM}", f"<dir>/{AIPP_FILE}" if aipp else None),
            "aipp_config": aipp,
        }

    # -- build ----------------------------------------------------------------------------------

    def compile(self, onnx_path: Path, target: CompileTarget, out_dir: Path) -> Path:
        out_dir = Path(out_dir)
        aipp = self._aipp_text(target)
        aipp_path = None
        if aipp is not None:
            aipp_path = out_dir / AIPP_FILE
            aipp_path.write_text(aipp)
        try:
            command = self._command(target, str(onnx_path), str(out_dir / OM_STEM), str(aipp_path) if aipp_path else None)
        except atc.AtcConfigError as exc:
            raise BackendUnavailable(str(exc)) from exc
        try:
            result = run_tool(command, timeout=self.atc_timeout, hint=atc.INSTALL_HINT, cwd=out_dir,
                              what=f"ATC compile for {self.soc_version} bs{target.batch_size}")
        except ToolNotFound as exc:
            raise BackendUnavailable(str(exc)) from exc
        produced = sorted(out_dir.glob(f"{OM_STEM}*.om"))  # some ATC versions add _linux_<arch>
        if len(produced) != 1:
            raise InferenceError(
                f"ATC reported success but wrote {len(produced)} .om files in {out_dir} "
                f"({[p.name for p in produced]}); expected {OM_STEM}.om. ATC said:\n{result.stdout[-2000:]}"
            )
        om = produced[0]
        if om.name != f"{OM_STEM}.om":
            om = om.rename(out_dir / f"{OM_STEM}.om")
        (out_dir / COMMAND_FILE).write_text(json.dumps({"command": command, "seconds": round(result.seconds, 3)}, indent=1))
        return om

    # -- run ------------------------------------------------------------------------------------

    def preflight(self, device_id: int) -> None:
        """Before timing: refuse a busy or unhealthy device (npu-smi info); record what was seen."""
        if not self.check_device:
            self.device_checks[device_id] = "skipped (check_device = false)"
            return
        from harness import npu_smi

        try:
            chips = npu_smi.discover()
        except ToolNotFound:
            self.device_checks[device_id] = "not checked: npu-smi not on PATH"
            return
        reason = npu_smi.check_device_free(chips, device_id)
        if reason:
            raise DeviceBusy(
                f"refusing to time on {reason}; wait until it is idle (npu-smi info), pick another with "
                "--device-ids, or set backend_options check_device = \"false\" in fixtures/chips.toml"
            )
        chip = next(c for c in chips if c.device_id == device_id)
        self.device_checks[device_id] = f"idle: {chip.name}, health {chip.health}, {chip.memory_used_mb:g}/{chip.memory_total_mb:g} MB"

    @contextmanager
    def open(
        self, artifact: Path, target: CompileTarget, device_id: int = 0, num_classes: int = 1000
    ) -> Iterator[AscendSession]:
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError as exc:
            raise BackendUnavailable(f"ais_bench cannot be imported ({exc}); {AIS_BENCH_HINT}") from exc
        where = f"ascend {self.soc_version} device {device_id} {Path(artifact).name} bs{target.batch_size}"
        try:
            raw = InferSession(device_id, str(artifact))
        except Exception as exc:  # aclruntime raises RuntimeError with the ACL error code
            raise _load_failure(where, device_id, f"ais_bench could not load the model: {type(exc).__name__}: {exc}") from exc
        _register_finalize(InferSession)
        try:
            yield AscendSession(raw, target, num_classes, target.options.get("aipp") == "static", where)
        finally:
            free = getattr(raw, "free_resource", None)
            if callable(free):
                free()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "version": self.version(),
            "soc_version": self.soc_version,
            "precision_mode": self.precision_mode or "from precision",
            "device_checks": {str(k): v for k, v in self.device_checks.items()},
        }


def _load_failure(where: str, device_id: int, detail: str) -> Exception:
    """Why InferSession failed, told apart with `npu-smi info`.

    No driver on this host (no npu-smi): the backend is unavailable, a skip. A driver that lists
    other devices: a wrong --device-ids, a failure naming the devices. A device that exists: a real
    failure (e.g. an .om for another SoC), never hidden as a skip.
    """
    from harness import npu_smi
    from harness.tools import ToolError

    try:
        chips = npu_smi.discover()
    except ToolNotFound:
        return BackendUnavailable(f"{where}: {detail}; no Ascend driver on this host: {npu_smi.INSTALL_HINT}")
    except (ToolError, npu_smi.NpuSmiError) as exc:
        return InferenceError(f"{where}: {detail}; and the driver does not answer: {exc}")
    ids = sorted(c.device_id for c in chips)
    if device_id not in ids:
        return InferenceError(f"{where}: {detail}; npu-smi info lists device(s) {ids}, not {device_id}: fix --device-ids")
    return InferenceError(f"{where}: {detail}")


def _register_finalize(infer_session_cls: Any) -> None:
    """ACL is finalized once per process, at exit (ais_bench: ``InferSession.finalize()``)."""
    global _FINALIZE_REGISTERED
    finalize = getattr(infer_session_cls, "finalize", None)
    if callable(finalize) and not _FINALIZE_REGISTERED:
        atexit.register(finalize)
        _FINALIZE_REGISTERED = True
