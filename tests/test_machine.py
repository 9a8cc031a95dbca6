"""lib/utils/machine.py: the CPU model and GPU name every benchmark prints with its figures."""
import platform

import torch

from lib.utils.machine import cpu_model, machine_info, machine_line

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7763  64-Core Processor
stepping\t: 1

processor\t: 1
model name\t: AMD EPYC 7763  64-Core Processor
"""
ARM = """processor\t: 0
BogoMIPS\t: 108.00
CPU part\t: 0xd0c

Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_cpu_model_from_cpuinfo_layouts(tmp_path):
    x86, arm, bare = tmp_path / "x86", tmp_path / "arm", tmp_path / "bare"
    x86.write_text(X86)
    arm.write_text(ARM)
    bare.write_text("processor\t: 0\nmodel\t\t: 1\n")          # a numeric "model" is not a name
    assert cpu_model(str(x86)) == "AMD EPYC 7763 64-Core Processor"   # "model" (a number) comes first
    assert cpu_model(str(arm)) == "BCM2835"
    fallback = platform.processor() or platform.machine() or "unknown CPU"
    assert cpu_model(str(bare)) == fallback
    assert cpu_model(str(tmp_path / "absent")) == fallback


def test_machine_info_and_line(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text(X86)
    info = machine_info(torch.device("cpu"), cpuinfo=str(x86))
    assert info["cpu"] == "AMD EPYC 7763 64-Core Processor" and info["gpu"] is None
    assert info["cpus"] >= 1 and info["torch_threads"] == torch.get_num_threads()
    assert machine_line(info) == (f"machine: AMD EPYC 7763 64-Core Processor ({info['cpus']} CPUs, "
                                  f"{info['torch_threads']} torch threads), torch {torch.__version__}")
    assert machine_line(dict(info, gpu="NVIDIA H100 80GB HBM3")).startswith(
        "machine: AMD EPYC 7763 64-Core Processor (") and ", GPU NVIDIA H100 80GB HBM3, torch " in \
        machine_line(dict(info, gpu="NVIDIA H100 80GB HBM3"))
