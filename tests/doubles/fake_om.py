"""TEST DOUBLE: the container the fake `atc` writes and the fake ais_bench reads.

Layout: ``b"FAKEOM01"``, a 4-byte little-endian header length, a JSON header (input name and
static shape, soc_version, precision_mode / precision_mode_v2, enable_small_channel, parsed AIPP config
or null), then the ONNX bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

MAGIC = b"FAKEOM01"


def write(path: Path, header: dict[str, Any], onnx_bytes: bytes) -> None:
    blob = json.dumps(header).encode()
    path.write_bytes(MAGIC + struct.pack("<I", len(blob)) + blob + onnx_bytes)


def read(path: Path) -> tuple[dict[str, Any], bytes]:
    data = Path(path).read_bytes()
    if not data.startswith(MAGIC):
        raise RuntimeError(f"[ERROR] load model failed: {path} is not an offline model (.om) (ret=145000)")
    (n,) = struct.unpack("<I", data[8:12])
    return json.loads(data[12 : 12 + n]), data[12 + n :]
