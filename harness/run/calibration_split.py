"""Calibration apart from judgement: which images calibrate an INT8 quantizer, which are scored.

Either ``--calibration DIR`` (laid out like ``--imagenet``) or a deterministic split of the given
data: the images ordered by a hash of their file content, the first ``[int8] calibration_images``
calibrate, the rest are scored. Images are identified by the SHA-256 of their file content, never
by name: a calibration image copied under another name into the scored folder is still the same
image. ``calibration_overlap`` is the number of scored images whose content is a calibration
image's; it must be 0 or the run refuses (:class:`CalibrationOverlap`). A split makes it 0 by
construction: a scored image with the content of a calibration image is left out of both sides'
scoring (the val set's few duplicate photos would otherwise be scored after calibrating on them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from harness import data as data_mod
from harness.cache import file_sha256
from harness.errors import UsageError

SPLIT, GIVEN = "split", "given"


class CalibrationOverlap(UsageError):
    """A calibration image is also scored: the INT8 model would be judged on what tuned it."""


@dataclass(frozen=True)
class CalibrationSplit:
    """The calibration images and the scored images of one data source, apart."""

    calibration: data_mod.DatasetListing
    scored: data_mod.DatasetListing
    source: str  # how they were chosen, for the record
    digest: str  # SHA-256 over the calibration images' sorted content digests
    overlap: int  # scored images whose content is a calibration image's: 0, or the run refused

    def record(self) -> dict[str, Any]:
        return {"calibration_images": len(self.calibration), "calibration_source": self.source,
                "calibration_digest": self.digest, "calibration_overlap": self.overlap}


def content_digests(listing: data_mod.DatasetListing) -> tuple[str, ...]:
    """Each listed image's file-content SHA-256, in ``names`` order."""
    return tuple(file_sha256(p) for p in listing.image_paths())


def subset(listing: data_mod.DatasetListing, keep: list[int]) -> data_mod.DatasetListing:
    """The listing of the images at positions ``keep`` (in listing order)."""
    return replace(listing, names=tuple(listing.names[i] for i in keep), labels=tuple(listing.labels[i] for i in keep),
                   folders=tuple(listing.folders[i] for i in keep) if listing.folders else ())


def set_digest(digests: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def split(listing: data_mod.DatasetListing, count: int) -> CalibrationSplit:
    """``count`` images of ``listing`` (fewer when it has no more than ``count``: half of it) calibrate,
    chosen by a hash of their content; the others are scored."""
    if len(listing) < 2:
        raise UsageError(f"{listing.image_dir}: {len(listing)} image(s); an int8 run needs at least 2 (one to "
                         "calibrate, one to score), or --calibration DIR")
    digests = content_digests(listing)
    n = count if len(listing) > count else len(listing) // 2
    order = sorted(range(len(listing)), key=lambda i: (hashlib.sha256(digests[i].encode()).digest(), i))
    chosen = sorted(order[:n])
    calibrating = {digests[i] for i in chosen}
    scored = [i for i in range(len(listing)) if digests[i] not in calibrating]  # chosen ones too
    dropped = len(listing) - n - len(scored)
    source = f"split of {listing.image_dir}: {n} of {len(listing)} images by content hash"
    if n < count:
        source += f" (half: fewer than [int8] calibration_images = {count} given)"
    if dropped:
        source += f"; {dropped} scored image(s) with a calibration image's content left out"
    return CalibrationSplit(calibration=subset(listing, chosen), scored=subset(listing, scored), source=source,
                            digest=set_digest([digests[i] for i in chosen]), overlap=0)


def apart(calibration: data_mod.DatasetListing, scored: data_mod.DatasetListing) -> CalibrationSplit:
    """``--calibration DIR``'s images against the scored ones: refuses any image in both (by content)."""
    calib = content_digests(calibration)
    seen = set(calib)
    both = [name for name, d in zip(scored.names, content_digests(scored), strict=True) if d in seen]
    if both:
        shown = ", ".join(both[:5]) + (f" and {len(both) - 5} more" if len(both) > 5 else "")
        raise CalibrationOverlap(
            f"calibration_overlap = {len(both)}: {len(both)} scored image(s) of {scored.image_dir} have the content "
            f"of a calibration image of {calibration.image_dir} ({shown}); an INT8 model must be judged on images it "
            "was not calibrated on: remove them from one folder, or drop --calibration to split the data instead")
    return CalibrationSplit(calibration=calibration, scored=scored, source=f"--calibration {calibration.image_dir}",
                            digest=set_digest(calib), overlap=0)
