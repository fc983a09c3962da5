"""modelzoo-cert: accuracy and throughput certification of ImageNet classifiers on accelerators."""

__version__ = "0.1.0"
