"""ImageNet data: listing and labels, decoding, the prepared uint8 cache, normalized batches.

The data flows one way: an ImageNet directory (ModelZoo ``val_label.txt`` or ImageFolder tree)
-> listing -> uint8 cache entry -> normalized float32 batches. Each module has one job:

- ``errors``: DataError, the one error class of bad input data
- ``labels``: ModelZoo label files and the ILSVRC2012 wnid order (``fixtures/imagenet_wnids.txt``)
- ``layout``: where the images are (ModelZoo or ImageFolder layout), what an ImageFolder holds
- ``listing``: DatasetListing and list_dataset (the join by name, ``limit``, the cache identity)
- ``coverage``: the full ILSVRC2012 val set or a subset of it, recognised by content
- ``transforms``: one image decoded, resized and cropped to uint8 (exact or draft decoding)
- ``normalization``: uint8 batches to float32, as torchvision's ToTensor + Normalize
- ``prepared``: PreparedDataset, the ``dataset`` cache entry built by a pool of workers
- ``synthetic``: the embedded synthetic images, a ``synthetic`` cache entry

Import from here (``from harness.data import list_dataset, prepare_dataset``); the modules are
the layout, this namespace is the interface. None of them imports torch or torchvision.
"""

from harness.data.coverage import (
    Coverage,
    coverage,
    coverage_of,
    label_file_is_canonical,
)
from harness.data.errors import DataError
from harness.data.labels import WNIDS_FILE, load_wnids, read_labels
from harness.data.layout import locate_dataset
from harness.data.listing import DatasetListing, list_dataset
from harness.data.normalization import normalize
from harness.data.prepared import (
    NoRoomForDataset,
    PreparedDataset,
    dataset_cache_inputs,
    prepare_dataset,
)
from harness.data.synthetic import synthetic_dataset
from harness.data.transforms import DECODE_MODES, preprocess_image

__all__ = [
    "DECODE_MODES",
    "WNIDS_FILE",
    "Coverage",
    "DataError",
    "DatasetListing",
    "NoRoomForDataset",
    "PreparedDataset",
    "coverage",
    "coverage_of",
    "dataset_cache_inputs",
    "label_file_is_canonical",
    "list_dataset",
    "load_wnids",
    "locate_dataset",
    "normalize",
    "prepare_dataset",
    "preprocess_image",
    "read_labels",
    "synthetic_dataset",
]
