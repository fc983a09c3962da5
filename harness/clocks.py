"""The two clocks a throughput figure can be measured by, and the only spelling of their names.

``wall``: host time around each run, always available. ``device_compute``: the device's own compute
time per run, where the runtime reports it (ais_bench's ``NPU_compute_time``). The timing loop
(harness.run.timing), the vendors' tools (harness.benchmark_tools) and the figure files
(harness.judge.baselines) all say which one a figure uses.
"""

WALL = "wall"
DEVICE_COMPUTE = "device_compute"
CLOCKS = (WALL, DEVICE_COMPUTE)
