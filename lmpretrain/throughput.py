"""Throughput users can see: model TFLOPS per device and MFU (model FLOPs utilization) over a window of steps.

MFU = the model FLOPs a device performed per second (``models.flops``: counted from the family's shapes, forward +
backward) / the device's dense bf16/fp16 tensor peak. The peaks below are the vendors' datasheet figures without
structured sparsity (NVIDIA's sheets print the sparse figure, twice these). A device not in the table, and a CPU, get
MFU only with ``--peak_tflops``; TFLOPS per device are logged either way. The table is the dense bf16/fp16 peak
whatever the run's precision (an fp32 run's MFU is then against the tensor-core peak, as MFU is usually quoted).
"""

from __future__ import annotations

import torch

# (substring of torch.cuda.get_device_name(), dense bf16/fp16 tensor TFLOPS); the first match wins, so the more
# specific names come first
PEAK_TFLOPS: tuple[tuple[str, float | None], ...] = (
    ("B200", 2250.0), ("GH200", 989.4), ("H200", 989.4),
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H800 PCIe", 756.0), ("H800", 989.4),
    ("A100", 312.0), ("A800", 312.0), ("A30", 165.0),
    ("A10G", None),  # AWS's variant of the A10, with its own clocks: no datasheet figure to trust here
    ("A10", 125.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("RTX A6000", 154.8), ("A40", 149.7),
    ("RTX 4090", 165.2), ("RTX 3090", 71.0),  # GeForce: fp16 with fp32 accumulation, as training runs it
    ("V100-PCIE", 112.0), ("V100", 125.0), ("T4", 65.0),  # fp16 (no bf16)
)


def known_peak_tflops(device_name: str) -> float | None:
    """The table's peak for a CUDA device name (``NVIDIA H100 80GB HBM3`` -> 989.4), None when it has none."""
    for key, peak in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def device_peak_tflops(device: torch.device, given: float | None = None) -> tuple[float | None, str]:
    """The peak MFU is measured against, and where it comes from (for the log): ``--peak_tflops`` when given, else
    the table's figure for this CUDA device, else None (a CPU, or a GPU the table lacks)."""
    if given is not None:
        return given, f"{given:g} TFLOPS (--peak_tflops)"
    if device.type != "cuda":
        return None, f"none known for a {device.type}"
    name = torch.cuda.get_device_name(device)
    peak = known_peak_tflops(name)
    if peak is None:
        return None, f"none known for {name}"
    return peak, f"{peak:g} TFLOPS ({name}, dense bf16/fp16)"


def throughput_scalars(*, tokens: float, flops: float, data_wait: float, elapsed: float,
                       peak_tflops: float | None, prefix: str = "train/") -> dict[str, float]:
    """tokens/s, TFLOPS per device, MFU (when a peak is known) and the share of the time spent waiting for data.
    ``tokens``: all processes' (a global rate); ``flops``: this device's."""
    elapsed = max(elapsed, 1e-9)
    tflops = flops / elapsed / 1e12
    out = {f"{prefix}tokens_per_second": tokens / elapsed, f"{prefix}tflops_per_device": tflops,
           f"{prefix}data_wait_fraction": data_wait / elapsed}
    if peak_tflops:
        out[f"{prefix}mfu"] = tflops / peak_tflops
    return out
