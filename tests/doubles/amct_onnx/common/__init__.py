"""TEST DOUBLE of ``amct_onnx.common`` (tests/doubles/README.md)."""
