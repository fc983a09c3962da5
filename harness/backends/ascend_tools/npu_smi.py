"""Chip discovery on Ascend hosts: parse `npu-smi info` and refuse to time a busy or unhealthy device.

The table (seed 002 shows one from a 310P3 host) has two rows per chip::

    | NPU     Name      | Health          | Power(W)     Temp(C)           Hugepages-Usage(page) |
    | Chip    Device    | Bus-Id          | AICore(%)    Memory-Usage(MB)                        |
    +===================+=================+======================================================+
    | 0       310P3     | OK              | 15.8         42                0    / 0              |
    | 0       0         | 0000:82:00.0    | 0            1074 / 21534                            |

followed by a process table (``| NPU  Chip | Process id | Process name | Process memory(MB) |``,
or ``No running processes found in NPU 0``). ``Device`` is the logical id ais_bench's
``device_id`` takes. A device is free for timing when its health is OK, its AI cores are idle and
no process holds it (the seeds: "use npu-smi info to make sure the device is idle").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from harness.backends.ascend_tools.tools import run_tool
from harness.errors import HarnessError

INSTALL_HINT = "install the Ascend driver (npu-smi ships with it, in /usr/local/sbin)"
_PAIR = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


class NpuSmiError(HarnessError, ValueError):
    """`npu-smi info` printed something this parser does not recognise."""


@dataclass(frozen=True)
class NpuChip:
    npu_id: int
    chip_id: int
    device_id: int
    name: str  # as npu-smi prints it: 310, 310P3, 910B...
    health: str
    bus_id: str
    aicore_percent: float
    memory_used_mb: float
    memory_total_mb: float
    power_w: float | None = None
    temp_c: float | None = None
    processes: tuple[str, ...] = field(default=())  # "pid name memMB" of processes holding the chip

    def busy_reason(self) -> str | None:
        if self.health.upper() != "OK":
            return f"device {self.device_id} ({self.name}) health is {self.health}, not OK"
        if self.processes:
            return f"device {self.device_id} ({self.name}) is used by: {'; '.join(self.processes)}"
        if self.aicore_percent > 0:
            return f"device {self.device_id} ({self.name}) AI cores are {self.aicore_percent:g}% busy"
        return None


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _number(text: str, where: str) -> float:
    if not _NUMBER.match(text):
        raise NpuSmiError(f"npu-smi info: expected a number for {where}, found {text!r}")
    return float(text)


def _int(text: str, where: str) -> int:
    if not text.isdigit():
        raise NpuSmiError(f"npu-smi info: expected an integer for {where}, found {text!r}")
    return int(text)


def parse_npu_smi(text: str) -> list[NpuChip]:
    """Every chip of an `npu-smi info` table, with the processes holding it."""
    lines = [ln for ln in text.splitlines() if ln.strip().startswith("|")]
    header = next((i for i, ln in enumerate(lines) if "Health" in ln and "Name" in ln), None)
    if header is None:
        raise NpuSmiError(
            "npu-smi info: expected a table with a `| NPU  Name | Health | ...` header (CANN driver's "
            f"npu-smi); found {len(text.splitlines())} lines without it. First line: {text.strip().splitlines()[:1]}"
        )
    process_header = next((i for i, ln in enumerate(lines) if "Process id" in ln), len(lines))
    chip_rows = lines[header + 2 : process_header]
    if len(chip_rows) % 2:
        raise NpuSmiError(f"npu-smi info: chip rows come in pairs (NPU/Name, Chip/Device); found {len(chip_rows)} rows")
    chips: list[NpuChip] = []
    for first, second in zip(chip_rows[0::2], chip_rows[1::2], strict=True):
        a, b = _cells(first), _cells(second)
        if len(a) < 3 or len(b) < 3:
            raise NpuSmiError(f"npu-smi info: expected 3 columns per row, found {first.strip()!r} / {second.strip()!r}")
        npu_name = a[0].split()
        chip_dev = b[0].split()
        if len(npu_name) != 2 or len(chip_dev) != 2:
            raise NpuSmiError(f"npu-smi info: expected `NPU Name` and `Chip Device`, found {a[0]!r} / {b[0]!r}")
        where = f"NPU {npu_name[0]}"
        power_temp = a[2].split()
        usage = b[2].split(maxsplit=1)
        memory = _PAIR.search(usage[1] if len(usage) > 1 else "")
        if memory is None:
            raise NpuSmiError(f"npu-smi info: expected `AICore(%) used / total MB` for {where}, found {b[2]!r}")
        chips.append(NpuChip(
            npu_id=_int(npu_name[0], f"{where} id"), name=npu_name[1], health=a[1],
            chip_id=_int(chip_dev[0], f"{where} chip"), device_id=_int(chip_dev[1], f"{where} device"),
            bus_id=b[1], aicore_percent=_number(usage[0], f"{where} AICore(%)"),
            memory_used_mb=float(memory.group(1)), memory_total_mb=float(memory.group(2)),
            power_w=float(power_temp[0]) if power_temp and _NUMBER.match(power_temp[0]) else None,
            temp_c=float(power_temp[1]) if len(power_temp) > 1 and _NUMBER.match(power_temp[1]) else None,
        ))
    if not chips:
        raise NpuSmiError("npu-smi info: the table lists no chips (is the driver loaded? try `npu-smi info` by hand)")
    return _with_processes(chips, lines[process_header + 1 :])


def _with_processes(chips: list[NpuChip], rows: Sequence[str]) -> list[NpuChip]:
    held: dict[tuple[int, int], list[str]] = {}
    for row in rows:
        cells = _cells(row)
        if len(cells) < 4 or "No running processes" in row:
            continue
        npu_chip = cells[0].split()
        if len(npu_chip) != 2 or not all(p.isdigit() for p in npu_chip):
            continue  # the process table's own header repeated, or a separator
        held.setdefault((int(npu_chip[0]), int(npu_chip[1])), []).append(f"pid {cells[1]} {cells[2]} {cells[3]} MB")
    return [replace(c, processes=tuple(held.get((c.npu_id, c.chip_id), ()))) for c in chips]


def discover(timeout: float = 60.0) -> list[NpuChip]:
    """Run `npu-smi info` and parse it (ToolNotFound without the driver)."""
    result = run_tool(["npu-smi", "info"], timeout=timeout, hint=INSTALL_HINT, what="npu-smi info")
    return parse_npu_smi(result.stdout)


def check_device_free(chips: Sequence[NpuChip], device_id: int) -> str | None:
    """None when ``device_id`` is present, healthy and idle; otherwise why it cannot be timed."""
    found = [c for c in chips if c.device_id == device_id]
    if not found:
        known = ", ".join(f"{c.device_id} ({c.name})" for c in chips)
        return f"device {device_id} is not in npu-smi info (devices: {known}); pass --device-ids with one of them"
    return found[0].busy_reason()
