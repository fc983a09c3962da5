"""Frozen specifications loaded from ``fixtures/*.toml`` and validated on load.

Every number the suite certifies against lives in ``fixtures/``; this package turns those files
into typed, immutable objects and rejects anything malformed with a message that names the file,
the entry, the field, what was expected and what was found.

- ``model``: ModelSpec and its parts (architecture, weights, preprocessing, published accuracy)
- ``chip``: ChipSpec, its PerfRules, and the CompileTarget a backend compiles for
- ``policy``: Policy, one frozen class per table of policy.toml, each field declared once
- ``settings``: declaring a field (``setting``) and the one checker of declared tables
- ``reader``: SpecError (and its Problems), reading TOML, the field checks the other loaders use
- ``policy_doc``: docs/policy.md's table and ``describe`` (a policy value for a help text)
- ``load``: load_models / load_chips / load_policy, resolve_chip, as_dict, FIXTURES_DIR
- ``library``: torchvision / timm models by name (``tv:resnet50``, ``timm:resnest50d.in1k``, globs):
  resolve_models, library_spec, catalogue

Import from here (``from harness.specs import ModelSpec, load_models``); the modules are the
layout, this namespace is the interface.
"""

from harness.specs.chip import (
    OFFLINE,
    PRECISIONS,
    SCENARIOS,
    SINGLE_STREAM,
    ChipSpec,
    CompileTarget,
    PerfRule,
)
from harness.specs.library import catalogue, library_spec, resolve_models
from harness.specs.load import (
    FIXTURES_DIR,
    as_dict,
    load_chips,
    load_models,
    load_policy,
    resolve_chip,
)
from harness.specs.model import (
    ARCH_SOURCES,
    INTERPOLATIONS,
    KEY_MAPPINGS,
    LIBRARY_PREFIXES,
    RESIZE_METHODS,
    AccuracyRef,
    ArchSpec,
    LibraryRef,
    ModelSpec,
    PreprocessSpec,
    WeightsSpec,
)
from harness.specs.policy import (
    AccuracyPolicy,
    ConversionPolicy,
    DataPolicy,
    HistoryPolicy,
    LocalizeThresholds,
    Policy,
    ReferencePolicy,
    TimingPolicy,
)
from harness.specs.reader import SpecError

__all__ = [
    "AccuracyPolicy",
    "ConversionPolicy",
    "DataPolicy",
    "LocalizeThresholds",
    "ARCH_SOURCES",
    "FIXTURES_DIR",
    "INTERPOLATIONS",
    "KEY_MAPPINGS",
    "LIBRARY_PREFIXES",
    "OFFLINE",
    "PRECISIONS",
    "SCENARIOS",
    "SINGLE_STREAM",
    "RESIZE_METHODS",
    "AccuracyRef",
    "ArchSpec",
    "ChipSpec",
    "CompileTarget",
    "HistoryPolicy",
    "LibraryRef",
    "ModelSpec",
    "PerfRule",
    "Policy",
    "PreprocessSpec",
    "ReferencePolicy",
    "SpecError",
    "TimingPolicy",
    "WeightsSpec",
    "as_dict",
    "catalogue",
    "library_spec",
    "load_chips",
    "load_models",
    "load_policy",
    "resolve_chip",
    "resolve_models",
]
