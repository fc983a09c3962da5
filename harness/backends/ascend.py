"""Huawei Ascend 310 / 310P3: ATC compiles the ONNX to an .om, ais_bench's Python API runs it.

Compile: the seeds' ATC command (:mod:`harness.backends.ascend_tools.atc`) as an argument list, run with a time limit;
its output goes into the error when it fails, and the command (with placeholders for the paths)
and the AIPP config are part of the compiled model's cache key and manifest
(:meth:`AscendBackend.compile_key`).

Run: ais_bench's ``InferSession`` in either of its two API generations, wrapped in an
:class:`~harness.backends.ascend_tools.infer_session.AscendSession` (static batch, padded short
batches); ACL is finalized once, at exit (that module's docstring says why and from which
sources). The session's NPU compute times (``exec_time_list``) are the timing loop's
``device_compute`` clock: ais_bench's own throughput (``1000 * batch / mean compute ms``); the
wall clock is recorded beside it. Before timing, :meth:`AscendBackend.preflight` refuses a busy or
unhealthy device (``npu-smi info``).

With ``aipp`` in the target's options (``--input uint8`` on an Ascend chip) normalization is
compiled in through ATC's AIPP: the .om takes uint8 RGB pixels packed NHWC, and the session
transposes the uint8 NCHW cache batches to that layout.

INT8 (``--precision int8``): AMCT's ``amct_onnx calibration`` quantizes the float ONNX
(:mod:`harness.backends.ascend_tools.amct`, :meth:`AscendBackend.quantizer`) and ``compile`` takes its
deploy ONNX through the same ATC command, at ATC's default mode for the layers AMCT left float
(docs/int8.md, "Ascend (AMCT), contract only").

Verified against the documented contracts only (the ATC, AMCT and ais_bench guides, the seeds'
commands), through the test doubles in tests/doubles/: no NPU was available where this was
written. See docs/ascend.md.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from harness.backends.ascend_tools import amct, atc, npu_smi
from harness.backends.ascend_tools.infer_session import (
    AIS_BENCH_HINT,
    FINALIZER,
    AscendSession,
    api_shape,
    free_resource,
    load_failure,
)
from harness.backends.ascend_tools.tools import ToolNotFound, run_tool
from harness.backends.base import (
    Backend,
    BackendUnavailable,
    DeviceBusy,
    InferenceError,
)
from harness.backends.options import OptionReader
from harness.backends.quantization import INT8
from harness.specs import SINGLE_STREAM, CompileTarget
from harness.versions import cann_version, installed_version

OM_STEM = "model"
AIPP_FILE = "aipp.cfg"
COMMAND_FILE = "atc_command.json"
OPTIONS = OptionReader("ascend")


def _cann_version() -> str:
    return cann_version() or "unknown"


def _ais_bench_version() -> str:
    found = installed_version("ais_bench", "ais-bench")
    return found[1] if found else "unknown"


class AscendBackend(Backend):
    """ATC + ais_bench. Options (``backend_options`` in fixtures/chips.toml, strings):

    - ``soc_version``: ATC ``--soc_version`` (``Ascend310``, ``Ascend310P3``).
    - ``precision_mode``: ATC ``--precision_mode``; default from the target precision
      (fp16: none, ATC's default ``force_fp16``; fp32: ``force_fp32``).
    - ``precision_mode_v2``: ATC ``--precision_mode_v2`` instead (not together with ``precision_mode``).
    - ``small_channel``: ``false`` leaves ``--enable_small_channel=1`` off the AIPP compile (default on,
      as the ATC guide advises for static AIPP on a <= 4-channel input; docs/ascend.md).
    - ``log``: ATC ``--log`` level (default ``error``).
    - ``atc_timeout``: seconds (>= 1) before a hung ATC is killed (default 3600).
    - ``check_device``: ``false`` skips the npu-smi idle/health check before timing.

    Booleans are ``true``/``false`` (or ``1 yes on`` / ``0 no off``); anything else is refused
    (:mod:`harness.backends.options`).

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
        self.small_channel = OPTIONS.flag("small_channel", small_channel)
        self.log = log
        self.atc_timeout = OPTIONS.number("atc_timeout", atc_timeout, 1.0)
        self.check_device = OPTIONS.flag("check_device", check_device)
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

    @staticmethod
    def _atc_precision(target: CompileTarget) -> str:
        """What ATC is asked for: an int8 target is AMCT's deploy ONNX, which ATC compiles as it does a
        float ONNX (its quantized layers are int8 by their AscendQuant/AscendDequant operators; the rest
        at ATC's default mode, as Ascend's ModelZoo compiles deploy models: docs/int8.md)."""
        return "fp16" if target.precision == INT8 else target.precision

    def _command(self, target: CompileTarget, onnx: str, output: str, aipp_path: str | None) -> list[str]:
        mode, mode_v2 = atc.precision_flags(self._atc_precision(target), self.precision_mode, self.precision_mode_v2)
        return atc.atc_command(onnx, output, target, self.soc_version, self.log, mode, aipp_path,
                               precision_mode_v2=mode_v2, small_channel=aipp_path is not None and self.small_channel)

    def compiled_precision(self, target: CompileTarget) -> str:
        """The ATC mode a model for ``target`` is compiled with (``force_fp16``, ``force_fp32``,
        ``precision_mode_v2=<v>``): what every record shows as precision, never plain "fp32". An int8
        target shows ``int8`` (its judgement keys on it: Policy.for_precision); describe() says the rest."""
        if target.precision == INT8:
            return INT8
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
            command = self._command(
                target, str(onnx_path), str(out_dir / OM_STEM), str(aipp_path) if aipp_path else None
            )
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
        (out_dir / COMMAND_FILE).write_text(
            json.dumps({"command": command, "seconds": round(result.seconds, 3)}, indent=1)
        )
        return om

    def quantizer(self) -> amct.AmctQuantizer:
        """AMCT's ``amct_onnx calibration`` (:mod:`harness.backends.ascend_tools.amct`); ATC then compiles
        its deploy ONNX. Without ``amct_onnx`` on PATH, --precision int8 is a skip that says how to install it."""
        if shutil.which(amct.TOOL) is None:
            raise BackendUnavailable(f"Ascend INT8 needs AMCT: `{amct.TOOL}` is not on PATH ({amct.INSTALL_HINT})")
        return amct.AmctQuantizer(timeout=self.atc_timeout)

    # -- run ------------------------------------------------------------------------------------

    def preflight(self, device_id: int) -> None:
        """Before timing: refuse a busy or unhealthy device (npu-smi info); record what was seen."""
        if not self.check_device:
            self.device_checks[device_id] = "skipped (check_device = false)"
            return
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
        self.device_checks[device_id] = (
            f"idle: {chip.name}, health {chip.health}, {chip.memory_used_mb:g}/{chip.memory_total_mb:g} MB"
        )

    @contextmanager
    def open(
        self, artifact: Path, target: CompileTarget, device_id: int = 0, num_classes: int = 1000,
        scenario: str = SINGLE_STREAM,
    ) -> Iterator[AscendSession]:
        """Load the .om on ``device_id`` through ais_bench's InferSession. Both scenarios run its
        synchronous loop, whose NPU compute time is the seeds' throughput definition: ``offline``
        figures say ``requests = 1``."""
        try:
            from ais_bench.infer.interface import InferSession
        except ImportError as exc:
            raise BackendUnavailable(f"ais_bench cannot be imported ({exc}); {AIS_BENCH_HINT}") from exc
        where = f"ascend {self.soc_version} device {device_id} {Path(artifact).name} bs{target.batch_size}"
        try:
            raw = InferSession(device_id, str(artifact))
        except Exception as exc:  # aclruntime raises RuntimeError with the ACL error code
            raise load_failure(
                where, device_id, f"ais_bench could not load the model: {type(exc).__name__}: {exc}"
            ) from exc
        FINALIZER.track(InferSession, raw)
        self.ais_bench_api = api_shape(InferSession)
        try:
            yield AscendSession(raw, target, num_classes, target.options.get("aipp") == "static", where)
        finally:
            free_resource(raw)

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
        if self.quantization:  # int8: AMCT's deploy model, compiled at ATC's mode for what stays float
            described["quantization"] = dict(self.quantization)
            described["int8_atc_precision"] = atc.precision_label(
                *atc.precision_flags("fp16", self.precision_mode, self.precision_mode_v2))
        return described

