"""Huawei Ascend 310 / 310P3: ATC compiles the ONNX to an .om, ais_bench's Python API runs it.

Compile: the seeds' ATC command (:mod:`harness.backends.ascend_tools.atc`) as an argument list, run with a time limit;
its output goes into the error when it fails, and the command (with placeholders for the paths)
and the AIPP config are part of the compiled model's cache key and manifest
(:meth:`AscendBackend.compile_key`).

Run: ``ais_bench.infer.interface.InferSession(device_id, model_path)``; ``infer([batch],
mode="static")`` returns the outputs as numpy arrays; the session's summary lists every run's NPU
compute time in ms (``exec_time_list``), which :meth:`AscendSession.compute_times_ms` hands to the
timing loop: the ``device_compute`` clock is ais_bench's own throughput (``1000 * batch / mean
compute ms``); the wall clock is recorded beside it. An .om has a static batch: a short last batch
is padded by repeating its last image, and the padding's outputs are dropped.

Two generations of ais_bench are in use, with different shapes of the same API (read from their
published sources; paths and lines below are of those repositories):

- Ascend's tools repository (github.com/Ascend/tools, 2022-2023,
  ``ais-bench_workload/tool/ais_bench/ais_bench/infer/interface.py``): ``sumary()`` only (line 106),
  ``finalize(self)`` an INSTANCE method (lines 108-110), no ``free_resource``; ``exec_time_list``
  is a list of float ms (``backend/base/include/Base/ModelInfer/ModelInferenceProcessor.h`` line
  139, ``std::vector<float>``).
- The ait / msit benchmark (github.com/Ascend/msit history, last at commit 42a9c807 2024-06,
  ``ait/components/benchmark/ais_bench/infer/interface.py``): ``finalize()`` a STATICMETHOD
  (lines 119-122), ``free_resource()`` (lines 509-511), ``summary()`` only (lines 649-650);
  ``exec_time_list`` holds ``(start, end)`` ms pairs (``ModelInferenceProcessor.h`` line 141).

In both, finalize ends ACL for the whole process (``TensorContext::Finalize`` -> ``DeviceManager::
DestroyDevices`` -> ``aclFinalize``: tools ``backend/base/module/Tensor/TensorContext/TensorContext.cpp``
lines 43-54 and ``DeviceManager/DeviceManager.cpp`` lines 88-121), and ACL is initialized only once,
when the process-wide ``TensorContext`` singleton is built (TensorContext.cpp lines 26-41, 73-77):
after a finalize no session can be opened again in that process. So finalize runs once, at exit
(:class:`_AclFinalizer`), as the last act of the process the way both CLIs end (tools
``ais_bench/infer/__main__.py`` line 351, ait ``benchmark_process.py`` line 566); a session is
released when it closes with ``free_resource()`` where that exists (ait ``benchmark_process.py``
line 562); the tools generation has no such call (its sessions are released when collected).

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
import inspect
import json
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Literal, Mapping, Sequence

import numpy as np

from harness.backends.ascend_tools import atc
from harness.backends.ascend_tools.tools import ToolNotFound, run_tool
from harness.backends.base import (
    Backend,
    BackendUnavailable,
    DeviceBusy,
    InferenceError,
    check_batch,
    check_logits,
)
from harness.environment import cann_version, installed_version
from harness.specs import CompileTarget

OM_STEM = "model"
AIPP_FILE = "aipp.cfg"
COMMAND_FILE = "atc_command.json"
AIS_BENCH_HINT = (
    "install ais_bench and aclruntime: the wheels from https://gitee.com/ascend/tools "
    "(ais-bench_workload/tool/ais_bench), `pip install aclruntime-*.whl ais_bench-*.whl`, on a host with "
    "the Ascend driver and CANN"
)


def _cann_version() -> str:
    return cann_version() or "unknown"


def _ais_bench_version() -> str:
    found = installed_version("ais_bench", "ais-bench")
    return found[1] if found else "unknown"


def _exec_times_ms(summary: Any) -> list[float]:
    """``exec_time_list`` as milliseconds: floats (tools generation), or ``(start, end)`` ms pairs (ait)."""
    times = []
    for item in list(getattr(summary, "exec_time_list", [])):
        if isinstance(item, (tuple, list)):
            start, end = item[0], item[-1]
            times.append(float(end) - float(start))
        else:
            times.append(float(item))
    return times


FinalizeKind = Literal["static", "instance", "absent"]


def finalize_kind(infer_session_cls: Any) -> FinalizeKind:
    """How this ais_bench's ``InferSession.finalize`` is called: on the class (ait: a staticmethod), on a
    live session (Ascend/tools: an instance method), or not at all (absent)."""
    raw = inspect.getattr_static(infer_session_cls, "finalize", None)
    if raw is None:
        return "absent"
    if isinstance(raw, (staticmethod, classmethod)):
        return "static"
    return "instance" if callable(raw) else "absent"


def api_shape(infer_session_cls: Any) -> str:
    """The ais_bench API generation seen, for the records (e.g. ``finalize static, summary, free_resource``)."""
    parts = [f"finalize {finalize_kind(infer_session_cls)}"]
    parts += [name for name in ("summary", "sumary", "free_resource") if hasattr(infer_session_cls, name)]
    return ", ".join(parts)


class _AclFinalizer:
    """Calls ais_bench's finalize once per process, at exit, in the form the installed generation has.

    ait: ``InferSession.finalize()`` on the class. Ascend/tools: ``session.finalize()`` on a session,
    so the most recently opened one is kept until exit (or until the next one replaces it). A weak
    reference would not do: pytest tears its fixtures down before ``atexit`` runs, so the last session
    would be gone and ACL never explicitly finalized. Finalizing each session as it closes would not
    do either: it ends ACL, and the next InferSession of the run could not load (see the module
    docstring). The cost: one closed model of the old generation stays loaded until the next opens.
    """

    def __init__(self) -> None:
        self._registered = False
        self._static: Callable[[], Any] | None = None
        self._last_session: Any = None

    def track(self, infer_session_cls: Any, session: Any) -> None:
        """Remember how to finalize, after ``session`` of ``infer_session_cls`` was opened."""
        kind = finalize_kind(infer_session_cls)
        if kind == "absent":
            return
        if kind == "static":
            self._static, self._last_session = infer_session_cls.finalize, None
        else:
            self._static, self._last_session = None, session
        if not self._registered:
            atexit.register(self.run)
            self._registered = True

    def run(self) -> None:
        """Finalize now (at exit); nothing when no session was opened since the last run."""
        static, last = self._static, self._last_session
        self._static = self._last_session = None
        if static is not None:
            static()
        elif last is not None:
            last.finalize()


_FINALIZER = _AclFinalizer()


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
        """NPU compute time of every run since the session opened (ais_bench's exec_time_list).

        ``summary()`` in ait, ``sumary()`` in the Ascend/tools generation (see the module docstring).
        """
        summary = getattr(self._s, "summary", None) or getattr(self._s, "sumary")
        return _exec_times_ms(summary())


class AscendBackend(Backend):
    """ATC + ais_bench. Options (``backend_options`` in fixtures/chips.toml, strings):

    - ``soc_version``: ATC ``--soc_version`` (``Ascend310``, ``Ascend310P3``).
    - ``precision_mode``: ATC ``--precision_mode``; default from the target precision
      (fp16: none, ATC's default ``force_fp16``; fp32: ``force_fp32``).
    - ``precision_mode_v2``: ATC ``--precision_mode_v2`` instead (not together with ``precision_mode``).
    - ``small_channel``: ``false`` leaves ``--enable_small_channel=1`` off the AIPP compile (default on,
      as the ATC guide advises for static AIPP on a <= 4-channel input; docs/ascend.md).
    - ``log``: ATC ``--log`` level (default ``error``).
    - ``atc_timeout``: seconds before a hung ATC is killed (default 3600).
    - ``check_device``: ``false`` skips the npu-smi idle/health check before timing.

    What every record shows as precision is the ATC mode the .om is compiled with
    (:meth:`compiled_precision`, e.g. ``force_fp16``).
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
        precision_mode_v2: str | None = None,
        small_channel: bool | str = True,
    ):
        self.soc_version = soc_version
        self.precision_mode = precision_mode or None
        self.precision_mode_v2 = precision_mode_v2 or None
        self.small_channel = _flag(small_channel)
        self.log = log
        self.atc_timeout = float(atc_timeout)
        self.check_device = _flag(check_device)
        self.device_checks: dict[int, str] = {}
        self.ais_bench_api: str | None = None

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
        mode, mode_v2 = atc.precision_flags(target.precision, self.precision_mode, self.precision_mode_v2)
        return atc.atc_command(onnx, output, target, self.soc_version, self.log, mode, aipp_path,
                               precision_mode_v2=mode_v2, small_channel=aipp_path is not None and self.small_channel)

    def compiled_precision(self, target: CompileTarget) -> str:
        """The ATC mode a model for ``target`` is compiled with (``force_fp16``, ``force_fp32``,
        ``precision_mode_v2=<v>``): what every record shows as precision, never plain "fp32"."""
        mode, mode_v2 = atc.precision_flags(target.precision, self.precision_mode, self.precision_mode_v2)
        return atc.precision_label(mode, mode_v2)

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
        from harness.backends.ascend_tools import npu_smi

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
        _FINALIZER.track(InferSession, raw)
        self.ais_bench_api = api_shape(InferSession)
        try:
            yield AscendSession(raw, target, num_classes, target.options.get("aipp") == "static", where)
        finally:
            free = getattr(raw, "free_resource", None)  # ait only; the tools generation has none
            if callable(free):
                free()

    def describe(self) -> dict[str, Any]:
        """Backend, versions, the ais_bench API seen and the device checks."""
        described: dict[str, Any] = {
            "backend": self.name,
            "version": self.version(),
            "soc_version": self.soc_version,
            "precision_mode_option": (f"precision_mode={self.precision_mode}" if self.precision_mode else
                                      f"precision_mode_v2={self.precision_mode_v2}" if self.precision_mode_v2 else
                                      "none: from the target precision"),
            "small_channel": self.small_channel,
            "ais_bench_api": self.ais_bench_api or "not loaded",
            "device_checks": {str(k): v for k, v in self.device_checks.items()},
        }
        return described


def _flag(value: bool | str) -> bool:
    """A chips.toml option string (or bool) as a bool: "0", "false", "no", "off" are False."""
    return str(value).lower() not in ("0", "false", "no", "off")


def _load_failure(where: str, device_id: int, detail: str) -> Exception:
    """Why InferSession failed, told apart with `npu-smi info`.

    No driver on this host (no npu-smi): the backend is unavailable, a skip. A driver that lists
    other devices: a wrong --device-ids, a failure naming the devices. A device that exists: a real
    failure (e.g. an .om for another SoC), never hidden as a skip.
    """
    from harness.backends.ascend_tools import npu_smi
    from harness.backends.ascend_tools.tools import ToolError

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
