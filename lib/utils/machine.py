"""The machine a figure was measured on, for every benchmark's output and JSON.

Speed ratios against the original depend on the CPU (its softmax meets denormal numbers, whose cost
varies from one CPU model to the next), so a figure without its machine cannot be compared.
"""
import os
import platform
from typing import Dict, Optional

import torch


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (Linux), else what ``platform`` knows."""
    fields = {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and value.strip():
                    fields.setdefault(key.strip().lower(), " ".join(value.split()))
    except OSError:
        pass
    # x86 names the model in "model name" ("model" is a number there); some ARM kernels only
    # fill "Hardware" or "Model".
    for key in ("model name", "hardware"):
        if key in fields:
            return fields[key]
    if "model" in fields and not fields["model"].isdigit():
        return fields["model"]
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info(device: Optional[torch.device] = None, cpuinfo: str = "/proc/cpuinfo") -> Dict:
    """{"cpu", "cpus", "torch_threads", "torch", "gpu"}; ``gpu`` is the CUDA device's name when
    ``device`` is a CUDA device, else None."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    gpu = None
    if device.type == "cuda" and torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(device)
    return {"cpu": cpu_model(cpuinfo), "cpus": usable_cpus(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "gpu": gpu}


def machine_text(info: Dict) -> str:
    """``<cpu> (<n> CPUs, <t> torch threads)[, GPU <name>], torch <version>``."""
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return f"{info['cpu']} ({info['cpus']} CPUs, {info['torch_threads']} torch threads){gpu}, torch {info['torch']}"


def machine_line(info: Dict) -> str:
    """The line benchmarks print first: ``machine: `` + :func:`machine_text`."""
    return "machine: " + machine_text(info)
