"""Certify results produced elsewhere: an ais_bench output folder, or a ModelZoo ``result.json``.

ais_bench (``python -m ais_bench --model m.om --input prep_dataset/ --output out/ --outfmt TXT``)
writes, for every input file ``<stem>.bin``, one file per model output: ``<stem>_<k>.txt``,
``.npy`` or ``.bin`` (``k`` = output index), plus a ``*_summary.json`` of timings. Rules this
reader applies (docs/ascend.md repeats them):

- ``<stem>_0.*`` holds the image's logits; it is joined to ``val_label.txt`` by the image name's
  stem (``ILSVRC2012_val_00000001.JPEG`` -> ``ILSVRC2012_val_00000001_0.txt``). Other outputs
  (``_1``, ``_2``...) are ignored and counted.
- ``.txt``: numbers separated by whitespace; ``.npy``: a numpy array (no pickles); ``.bin``: raw
  little-endian float32, or float16 when the file is half that size. Each file must hold exactly
  ``num_classes`` finite values: a file with a whole batch (``k x num_classes``, e.g. ais_bench
  run on batched input files, padding included) is an error, since rows cannot be matched to
  images by name.
- ``*_summary.json``, ``sumary.json``, ``result.json``, ``*.log`` and dot files are not
  predictions. Any other file is misnamed: an error naming it.
- An image both as ``.txt`` and ``.npy`` (say) is an error. Labels without predictions and
  predictions without labels are an error by default, or scored on the intersection with both
  counts recorded (``--on-label-mismatch intersect``).
- A folder without prediction files but with one sub-folder (ais_bench's timestamped output
  folder): that sub-folder is read.
- Multi-device runs (``--device 0,1``) write one sub-folder per device under the timestamped
  folder: ``<output>/<timestamp>/device<N>/`` in Ascend's tools ais_bench
  (ais-bench_workload/tool/ais_bench/ais_bench/infer/__main__.py line 404) and
  ``<output>/<timestamp>/device<N>_<i>/`` (``i`` = the device's index in ``--device``) in the
  ait / msit benchmark (ait/components/benchmark/ais_bench/infer/benchmark_process.py lines
  438-446). A folder whose sub-folders are all such device folders is read as one set: every
  image must appear once; an image in two device folders is an error naming both files (ait runs
  every input on every device unless ``--divide-input`` is given, main_cli.py lines 278-283).
  ait takes the timestamp in each device's process, so one run's device folders can land in two
  timestamped folders: that is refused with the layout named (move them under one folder).

:func:`pair_with_reference` joins the scored images by name to reference logits computed here
(the torch reference on ``--imagenet``'s images): the paired gate's inputs."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import UsageError
from harness.judge.gates import topk_correct
from harness.judge.metrics import Accuracy, Parity, accuracy, parity
from harness.safe_load import UntrustedInput, npy_header, read_json_file, read_npy

PREDICTION_SUFFIXES = (".txt", ".npy", ".bin")
RESULT_JSON = "result.json"
_NAME = re.compile(r"^(?P<stem>.+)_(?P<k>[0-9]+)$")
# ais_bench's per-device output folders: device<N> (Ascend/tools), device<N>_<index> (ait / msit).
DEVICE_FOLDER = re.compile(r"^device[0-9]+(_[0-9]+)?$")


class PredictionsError(UsageError, ValueError):
    """A predictions folder or result.json does not follow the documented layout."""


@dataclass(frozen=True)
class PredictionScore:
    accuracy: Accuracy
    folder: Path
    formats: dict[str, int]
    other_outputs_ignored: int
    device_folders: tuple[str, ...] = field(default=())  # multi-device layout: the device folders read
    missing: int = 0  # labelled images without a prediction (scored on the intersection)
    extra: int = 0  # predictions of images the label file does not list
    missing_examples: tuple[str, ...] = field(default=())
    extra_examples: tuple[str, ...] = field(default=())
    # The images scored, as the label file names them, with their labels and logits (same order).
    names: tuple[str, ...] = field(default=())
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    logits: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32), repr=False)


@dataclass(frozen=True)
class ReferencePairing:
    """Predictions made elsewhere joined by image name to reference logits computed here: the
    paired gates' inputs (per-image top-1/top-5 correctness, same images, same labels)."""

    reference_correct: dict[str, np.ndarray]
    candidate_correct: dict[str, np.ndarray]
    reference: Accuracy
    agreement: Parity
    unpaired: tuple[str, ...]  # scored images the reference was not computed on
    # The paired images (as the label file names them), their labels and reference logits (same
    # order as the correctness arrays); the predictions' correctness on the unpaired images.
    names: tuple[str, ...] = ()
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)
    reference_logits: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32), repr=False)
    unpaired_correct: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def pair_with_reference(score: PredictionScore, names: Sequence[str], logits: np.ndarray) -> ReferencePairing | None:
    """Join ``score``'s images to reference ``logits`` of the images ``names`` by file stem (either
    side may name ``.JPEG`` or not); both are scored against ``score``'s labels. None when no
    scored image has a reference row."""
    row = {Path(n).stem: i for i, n in enumerate(names)}
    mine = [i for i, n in enumerate(score.names) if Path(n).stem in row]
    if not mine:
        return None
    ref = np.asarray(logits)[[row[Path(score.names[i]).stem] for i in mine]]
    got, truth = score.logits[mine], score.labels[mine]
    taken = set(mine)
    others = [i for i in range(len(score.names)) if i not in taken]
    return ReferencePairing(
        reference_correct=topk_correct(ref, truth), candidate_correct=topk_correct(got, truth),
        reference=accuracy(ref, truth), agreement=parity(ref, got),
        unpaired=tuple(score.names[i] for i in others), names=tuple(score.names[i] for i in mine), labels=truth,
        reference_logits=ref, unpaired_correct=topk_correct(score.logits[others], score.labels[others]))


@dataclass(frozen=True)
class ReportedAccuracy:
    """What a ModelZoo ``result.json`` states (no logits: nothing can be re-scored)."""

    top1: float
    top5: float | None
    count: int
    classes: int | None
    path: Path

    def as_accuracy(self) -> Accuracy:
        """The stated figures; without a stated top-5 it is NaN (and its gate is not checked)."""
        top5 = self.top5 if self.top5 is not None else float("nan")
        return Accuracy(count=self.count, top1=self.top1, top5=top5, correct1=round(self.top1 * self.count / 100),
                        correct5=round(top5 * self.count / 100) if self.top5 is not None else 0)


def _is_ignored(name: str) -> bool:
    return (name.startswith(".") or name.endswith("summary.json") or name in ("sumary.json", RESULT_JSON)
            or name.endswith(".log"))


def _has_predictions(folder: Path) -> bool:
    return any(p.suffix in PREDICTION_SUFFIXES and p.is_file() for p in folder.iterdir())


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _device_folders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` when every one is an ais_bench device folder, else []."""
    subdirs = _subfolders(folder)
    return subdirs if subdirs and all(DEVICE_FOLDER.match(p.name) for p in subdirs) else []


def _layout(folder: Path) -> list[Path] | None:
    """``[folder]`` when it holds prediction files, its device folders for a multi-device run, else None."""
    devices = _device_folders(folder)
    if _has_predictions(folder):
        if devices:
            raise PredictionsError(
                f"{folder} holds prediction files and device folders ({', '.join(p.name for p in devices)}); "
                "pass one ais_bench output: a folder of <image>_0 files, or the timestamped folder of one "
                "multi-device run (device<N>/ or device<N>_<i>/ folders only)"
            )
        return [folder]
    return devices or None


def prediction_folders(folder: Path) -> list[Path]:
    """The folder(s) holding the prediction files under ``folder``.

    ``folder`` itself; or its one (timestamped) sub-folder; or, for a multi-device run, every
    ``device<N>[_<i>]`` folder of either (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictionsError(f"predictions folder {folder} does not exist or is not a directory")
    found = _layout(folder)
    if found is not None:
        return found
    subdirs = _subfolders(folder)
    if len(subdirs) == 1:
        found = _layout(subdirs[0])
        if found is not None:
            return found
    spread = [p for p in subdirs if _device_folders(p)]
    if len(spread) > 1:
        raise PredictionsError(
            f"{folder}: ais_bench multi-device output under {len(spread)} timestamped folders "
            f"({', '.join(p.name for p in spread)}). One run is read as <output>/<timestamp>/device<N>[_<i>]/; "
            "ait takes the timestamp in each device's process, so one run's device folders can be split over two "
            "timestamps: move the device folders of the run to certify under one folder and pass that"
        )
    return [folder]


def result_json_only(folder: Path) -> Path | None:
    """``folder/result.json`` when the folder holds no prediction files (all a team kept), else None."""
    path = Path(folder) / RESULT_JSON
    return path if path.is_file() and not any(_has_predictions(f) for f in prediction_folders(folder)) else None


# The most bytes a .txt of logits takes per value: "-1.2345678901234567e+308" and a separator is 25.
_TXT_BYTES_PER_VALUE = 64
# ModelZoo's result.json is a few hundred bytes; ImageNet-1k has 1.33 M images in all, so a count
# beyond 10**8 is no evaluation (and 10**400 would not even convert to a float).
RESULT_JSON_MAX_BYTES, MAX_REPORTED_IMAGES = 1 << 20, 10**8


def _check_count(path: Path, count: int, num_classes: int) -> None:
    """``count`` values in one prediction file: exactly ``num_classes``, or the error that says why not."""
    if count == num_classes:
        return
    if count % num_classes == 0 and count > num_classes:
        raise PredictionsError(
            f"{path}: holds {count // num_classes} rows of {num_classes} logits: ais_bench wrote a whole (possibly "
            "padded) batch into one file, so its rows cannot be matched to images by name. Rerun ais_bench on one "
            "input file per image (the ModelZoo layout) so that it writes <image>_0 files"
        )
    raise PredictionsError(f"{path}: expected {num_classes} logits (one per class), found {count} values")


def _load_values(path: Path, num_classes: int) -> np.ndarray:
    """The ``num_classes`` logits of one prediction file, its size (``.bin``, ``.txt``) or header
    (``.npy``: float or integer dtype only) checked before anything is read: a file from another
    machine cannot make this allocate more than a few times ``num_classes`` values."""
    suffix = path.suffix
    try:
        size = path.stat().st_size
        if suffix == ".npy":
            _check_count(path, npy_header(path, str(path)).size, num_classes)
            values = read_npy(path, str(path), size=num_classes, kinds="fiu", finite=False).astype(np.float64).ravel()
        elif suffix == ".txt":
            limit = _TXT_BYTES_PER_VALUE * num_classes + 4096
            if size > limit:
                raise PredictionsError(
                    f"{path}: {size} bytes, more than {num_classes} numbers take ({limit} bytes at most); expected "
                    f"{num_classes} logits separated by whitespace (a whole batch in one file? rerun ais_bench on "
                    "one input file per image)")
            values = np.array(path.read_text(encoding="utf-8").split(), dtype=np.float64)
        else:
            if size == 2 * num_classes:
                dtype = "<f2"
            elif size % 4 == 0:
                _check_count(path, size // 4, num_classes)
                dtype = "<f4"
            else:
                raise PredictionsError(f"{path}: {size} bytes is neither {num_classes} float32 ({4 * num_classes} "
                                       f"bytes) nor {num_classes} float16 ({2 * num_classes} bytes) values")
            with path.open("rb") as fh:  # no more than the size checked, even if it grows meanwhile
                values = np.frombuffer(fh.read(size), dtype=dtype).astype(np.float64)
    except PredictionsError:
        raise
    except UntrustedInput as exc:
        raise PredictionsError(f"{exc}; expected {num_classes} float logits as np.save writes them") from None
    except (ValueError, OSError) as exc:
        raise PredictionsError(f"{path}: cannot read {suffix} logits: {exc}") from None
    _check_count(path, values.size, num_classes)
    with np.errstate(over="ignore"):
        logits = values.astype(np.float32)
    if not np.isfinite(logits).all():  # after the cast: 1e40 is finite in float64, not in float32
        raise PredictionsError(f"{path}: contains NaN or Inf logits (or values beyond float32's range)")
    return logits


@dataclass(frozen=True)
class AisBenchOutput:
    """What an ais_bench output folder held: ``{image stem: logits}``, the count per file format,
    the other-output files ignored, and the folders read (several for a multi-device run)."""

    logits: dict[str, np.ndarray]
    formats: dict[str, int]
    other_outputs_ignored: int
    folders: tuple[Path, ...]

    def device_folders(self, root: Path) -> tuple[str, ...]:
        """The device folders read, when ``root`` was a multi-device run; else ()."""
        if list(self.folders) == [Path(root)] or not all(DEVICE_FOLDER.match(p.name) for p in self.folders):
            return ()
        return tuple(p.name for p in self.folders)


def read_ais_bench_folder(folder: Path, num_classes: int) -> AisBenchOutput:
    """The predictions of an ais_bench output folder (one device or several)."""
    folders = prediction_folders(folder)
    found: dict[str, Path] = {}
    formats: dict[str, int] = {}
    other = 0
    misnamed: list[str] = []
    for sub in folders:
        for path in sorted(sub.iterdir()):
            if not path.is_file() or _is_ignored(path.name):
                continue
            m = _NAME.match(path.stem)
            if path.suffix not in PREDICTION_SUFFIXES or m is None:
                misnamed.append(str(path.relative_to(folder)) if len(folders) > 1 else path.name)
                continue
            if m.group("k") != "0":
                other += 1
                continue
            stem = m.group("stem")
            if stem in found:
                first = found[stem]
                if first.parent == path.parent:
                    raise PredictionsError(
                        f"{sub}: two predictions for image {stem!r}: {first.name} and {path.name}; keep one format"
                    )
                raise PredictionsError(
                    f"{folder}: image {stem!r} has predictions in two device folders: {first} and {path}. Each image "
                    "must be predicted once: ait runs every input on every device unless --divide-input is given; "
                    f"certify one device folder (--predictions {first.parent}) or rerun with --divide-input"
                )
            found[stem] = path
    where = folders[0] if len(folders) == 1 else Path(folder)
    if misnamed:
        raise PredictionsError(
            f"{where}: {len(misnamed)} file(s) do not follow ais_bench's <image>_<output index>.txt|.npy|.bin "
            f"naming: {', '.join(misnamed[:5])}{' ...' if len(misnamed) > 5 else ''}; rename or remove them"
        )
    if not found:
        raise PredictionsError(
            f"{where}: no prediction files (<image>_0.txt|.npy|.bin, as `python -m ais_bench --output` writes); "
            "is this the ais_bench output folder?"
        )
    logits = {}
    for stem, path in found.items():
        logits[stem] = _load_values(path, num_classes)
        formats[path.suffix.lstrip(".")] = formats.get(path.suffix.lstrip("."), 0) + 1
    return AisBenchOutput(logits, formats, other, tuple(folders))


def _stems(labels: Mapping[str, int]) -> dict[str, str]:
    stems: dict[str, str] = {}
    for name in labels:
        stem = Path(name).stem
        if stem in stems:
            raise PredictionsError(f"label file lists {stems[stem]!r} and {name!r}: both map to prediction {stem}_0")
        stems[stem] = name
    return stems


def score_folder(folder: Path, labels: Mapping[str, int], num_classes: int,
                 on_mismatch: str = "error") -> PredictionScore:
    """Top-1/top-5 of an ais_bench output folder against ``labels`` (image name -> class)."""
    output = read_ais_bench_folder(folder, num_classes)
    logits = output.logits
    stems = _stems(labels)
    missing = sorted(s for s in stems if s not in logits)
    extra = sorted(s for s in logits if s not in stems)
    if (missing or extra) and on_mismatch != "intersect":
        parts = []
        if missing:
            parts.append(f"{len(missing)} labelled image(s) have no prediction (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} prediction(s) have no label (e.g. {', '.join(extra[:3])})")
        raise PredictionsError(
            f"{folder}: {'; '.join(parts)}. Pass the label file of the images that were run (--imagenet-labels), "
            "or --on-label-mismatch intersect to score the images present in both (counts are recorded)"
        )
    common = [s for s in stems if s in logits]
    if not common:
        raise PredictionsError(f"{folder}: no prediction matches a labelled image by name; is it the right label file?")
    matrix = np.stack([logits[s] for s in common])
    truth = np.array([labels[stems[s]] for s in common])
    return PredictionScore(
        accuracy=accuracy(matrix, truth), folder=Path(folder), formats=output.formats,
        other_outputs_ignored=output.other_outputs_ignored, missing=len(missing), extra=len(extra),
        missing_examples=tuple(missing[:5]), extra_examples=tuple(extra[:5]),
        device_folders=output.device_folders(folder),
        names=tuple(stems[s] for s in common), labels=truth, logits=matrix,
    )


def _percent(value: object, where: str) -> float:
    text = str(value).strip().rstrip("%")
    if not re.fullmatch(r"[0-9]{1,3}(\.[0-9]{1,12})?", text):  # float() takes "7_7", "٧٧" and "nan"
        raise PredictionsError(f"{where}: expected a percentage like '77.62%', found {value!r}")
    number = float(text)
    if not 0.0 <= number <= 100.0:
        raise PredictionsError(f"{where}: a percentage must be within 0..100, found {value!r}")
    return number


def read_result_json(path: Path) -> ReportedAccuracy:
    """The ModelZoo's ``result.json``: ``{"title": "Overall statistical evaluation", "value": [{"key":
    "Number of images", "value": "50000"}, {"key": "Top1 accuracy", "value": "77.62%"}, ...]}``."""
    path = Path(path)
    try:
        data = read_json_file(path, RESULT_JSON_MAX_BYTES)
    except UntrustedInput as exc:
        detail = str(exc).removeprefix(f"{path}: ")
        raise PredictionsError(f"{path}: not a readable JSON file ({detail}); expected ModelZoo's "
                               "result.json") from None
    entries = data.get("value") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "key" in e and "value" in e for e in entries):
        raise PredictionsError(
            f"{path}: expected the ModelZoo layout {{\"title\": \"Overall statistical evaluation\", \"value\": "
            "[{\"key\": \"Top1 accuracy\", \"value\": \"77.62%\"}, ...]}"
        )
    found = {str(e["key"]).strip().lower(): e["value"] for e in entries}
    if "top1 accuracy" not in found or "number of images" not in found:
        raise PredictionsError(f"{path}: needs the keys 'Number of images' and 'Top1 accuracy'; found {sorted(found)}")
    count_text = str(found["number of images"]).strip()
    try:
        if not re.fullmatch(r"[0-9]+", count_text):  # int() takes "5_000" and other scripts' digits
            raise ValueError(count_text)
        count = int(count_text)  # a ValueError past 4300 digits
    except ValueError:
        raise PredictionsError(f"{path}: 'Number of images' must be an integer of ASCII digits, found "
                               f"{str(found['number of images'])[:40]!r}") from None
    if count <= 0:
        raise PredictionsError(f"{path}: 'Number of images' must be positive, found {count}")
    if count > MAX_REPORTED_IMAGES:
        raise PredictionsError(f"{path}: 'Number of images' {count} is more than any ImageNet evaluation has "
                               f"(at most {MAX_REPORTED_IMAGES})")
    classes = str(found.get("number of classes", "")).strip()
    return ReportedAccuracy(
        top1=_percent(found["top1 accuracy"], f"{path}: Top1 accuracy"),
        top5=_percent(found["top5 accuracy"], f"{path}: Top5 accuracy") if "top5 accuracy" in found else None,
        count=count,
        # A few ASCII digits only: isdigit() takes "²", which int() refuses, and 5000 digits int() refuses.
        classes=int(classes) if classes.isascii() and classes.isdigit() and len(classes) < 10 else None,
        path=path,
    )
