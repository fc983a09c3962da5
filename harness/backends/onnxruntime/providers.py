"""ONNX Runtime execution providers: the chip's options parsed, the precision rules, the provider list.

What an ``InferenceSession`` is created with is decided here, without creating one: the
providers (``providers = "TensorrtExecutionProvider,CUDAExecutionProvider"`` in
``fixtures/chips.toml``), the user's per-provider options, whether they can honour the target's
precision, and the ``(provider, options)`` pairs with the harness's own options (device, TensorRT
precision and profile shapes, engine cache) first and the CPU provider last. Also which pip
distribution ships a missing provider, for the unavailability reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.backends.base import BackendUnavailable
from harness.backends.options import OptionReader
from harness.specs import CompileTarget

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)
# Which pip distribution of ONNX Runtime ships a provider (they replace one another).
PROVIDER_PACKAGES: Mapping[str, str] = {
    TENSORRT: "onnxruntime-gpu",
    CUDA: "onnxruntime-gpu",
    "OpenVINOExecutionProvider": "onnxruntime-openvino",
    "DmlExecutionProvider": "onnxruntime-directml",
    "MIGraphXExecutionProvider": "onnxruntime-migraphx",
    "QNNExecutionProvider": "onnxruntime-qnn",
}
GPU_INSTALL_HINT = (
    "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu>=1.16' (or: pip install -e '.[gpu]'), "
    "with the CUDA 12 and cuDNN 9 runtime libraries"
)
TENSORRT_INSTALL_HINT = ", plus the TensorRT 10 libraries (pip install tensorrt, or NVIDIA's packages)"
# The name onnxruntime.quantization.write_calibration_table gives its flatbuffers table, which the TensorRT EP
# reads from trt_engine_cache_path at int8 (harness.backends.onnxruntime.trt_int8 writes it).
INT8_CALIBRATION_TABLE = "calibration.flatbuffers"
OPTIONS = OptionReader("onnxruntime")


def parse_providers(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"TensorrtExecutionProvider,CUDAExecutionProvider"`` (as chips.toml gives it) or a list.

    Names are checked against every provider ONNX Runtime knows (available in this build or not);
    None or empty means the CPU provider.
    """
    return OPTIONS.names("providers", value, item="provider", allowed=_known_providers() if value else None) or (CPU,)


def _known_providers() -> list[str] | None:
    """Every provider ONNX Runtime knows; None without ONNX Runtime (nothing can be checked then,
    and ``unavailable_reason()`` says what to install)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_all_providers())


def parse_provider_options(value: str | Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, str]]:
    """Per-provider options, as a mapping or as chips.toml's one-string form.

    The string form is ``Provider:key=value,key=value;Provider:key=value``, e.g.
    ``"TensorrtExecutionProvider:trt_max_workspace_size=2147483648,trt_builder_optimization_level=3"``.
    Values stay strings: ONNX Runtime parses provider option values itself.
    """
    return OPTIONS.sections("provider_options", value, section="Provider")


def check_provider_options(providers: Sequence[str], user_options: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse options for a provider that is not in ``providers``."""
    stray = sorted(set(user_options) - set(providers))
    if stray:
        raise OPTIONS.error(
            "provider_options", f"names {', '.join(stray)}, which is not in providers ({','.join(providers)}); "
            "add it to providers or drop its options"
        )


def check_precision(providers: Sequence[str], precision: str) -> None:
    """Refuse a precision the providers cannot honour, saying what would."""
    if precision == "fp32":
        return
    gpu = any(p in GPU_PROVIDERS for p in providers)
    if precision == "int8":  # the QDQ model ORT's static quantizer writes (harness.backends.onnxruntime.quantize)
        if not gpu or providers[0] == TENSORRT:  # or TensorRT's calibration table (.trt_int8)
            return
        raise BackendUnavailable(
            f"onnxruntime with {','.join(providers)} has no INT8 path here: this backend quantizes for the CPU "
            f"provider (a QDQ model) or for TensorRT (a calibration table), not for the CUDA provider; put "
            f"{TENSORRT} first in providers, or run --precision int8 on the CPU provider"
        )
    if not gpu:
        raise BackendUnavailable(
            f"the onnxruntime CPU backend compiles fp32 only, asked for {precision}; "
            "use --precision fp32 (fp16 gives no speed-up on CPU EPs) or int8 (a quantized model)"
        )
    if precision == "fp16":
        if TENSORRT in providers:
            return
        raise BackendUnavailable(
            f"onnxruntime with {','.join(providers)} cannot run fp16: the CUDA provider runs each node "
            "in its tensors' precision, so fp16 needs a float16-converted ONNX, which this backend does "
            f"not make; add {TENSORRT} first in providers (trt_fp16_enable), or use --precision fp32"
        )
    raise BackendUnavailable(
        f"onnxruntime with {','.join(providers)} runs fp32 or (with {TENSORRT}) fp16; asked for "
        f"{precision}: use --precision fp16 or fp32"
    )


def _dims(batch: int, shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in (batch, *shape))


def harness_provider_options(
    provider: str, device_id: int, target: CompileTarget, engine_dir: Path | None
) -> dict[str, str]:
    """The options this backend sets itself for ``provider`` (users may not contradict them)."""
    if provider == CUDA:
        return {"device_id": str(device_id)}
    if provider == TENSORRT:
        name = target.input_name
        opts = {
            "device_id": str(device_id),
            "trt_fp16_enable": "True" if target.precision == "fp16" else "False",
            # int8: TensorRT's implicit quantization with ORT's flatbuffers table, read from the engine cache
            # path (docs/int8.md); layers TensorRT keeps out of int8 run in fp32.
            **({"trt_int8_enable": "True", "trt_int8_calibration_table_name": INT8_CALIBRATION_TABLE,
                "trt_int8_use_native_calibration_table": "False"} if target.precision == "int8" else {}),
            # trtexec's --minShapes/--optShapes/--maxShapes: short last batches need no rebuild.
            "trt_profile_min_shapes": f"{name}:{_dims(1, target.input_shape)}",
            "trt_profile_opt_shapes": f"{name}:{_dims(target.batch_size, target.input_shape)}",
            "trt_profile_max_shapes": f"{name}:{_dims(target.batch_size, target.input_shape)}",
        }
        if engine_dir is not None:
            opts |= {
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(engine_dir),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(engine_dir),
            }
        return opts
    return {}


def provider_list(
    providers: Sequence[str],
    target: CompileTarget,
    device_id: int = 0,
    user_options: Mapping[str, Mapping[str, str]] | None = None,
    engine_dir: Path | None = None,
) -> list[tuple[str, dict[str, str]]]:
    """The ``(provider, options)`` pairs an InferenceSession is created with, in priority order.

    The harness's own options (device, TensorRT precision, profile shapes, engine cache) come
    first; ``user_options`` add to them and may not contradict them. The CPU provider is always
    last, as ONNX Runtime's fallback for nodes no other provider takes.
    """
    check_precision(providers, target.precision)
    user_options = user_options or {}
    check_provider_options(providers, user_options)
    out: list[tuple[str, dict[str, str]]] = []
    for provider in providers:
        opts = harness_provider_options(provider, device_id, target, engine_dir)
        for key, value in user_options.get(provider, {}).items():
            if key in opts and opts[key].lower() != value.lower():
                raise OPTIONS.error(
                    "provider_options", f"{provider} {key}={value} contradicts {opts[key]!r}, which the harness "
                    "derives from the chip and target (device_id, precision, batch size, engine cache); change "
                    "those instead, or drop the option"
                )
            opts[key] = value
        out.append((provider, opts))
    if CPU not in providers:
        out.append((CPU, {}))
    return out


def missing_providers_problem(missing: Sequence[str], available: Sequence[str], distribution: str) -> str:
    """Why ``missing`` providers are not in this ONNX Runtime, and the distribution that has them."""
    packages = sorted({PROVIDER_PACKAGES.get(p, "an onnxruntime build with it") for p in missing})
    if packages == ["onnxruntime-gpu"]:
        fix = GPU_INSTALL_HINT + (TENSORRT_INSTALL_HINT if TENSORRT in missing else "")
    else:
        fix = f"install {' or '.join(packages)}"
    return (
        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in this ONNX Runtime "
        f"({distribution}; available: {', '.join(available)}); it needs {', '.join(packages)}: {fix}"
    )
