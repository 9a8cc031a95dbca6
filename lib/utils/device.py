"""``--gpu_id N`` -> ``torch.device('cuda:N')``, or the CPU with one clear warning when CUDA is absent;
TRAIN.AMP's autocast; TRAIN.TF32's switch."""
import os
import warnings
from contextlib import nullcontext

import torch

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

_warned = set()


def select_device(gpu_id: int = 0, use_cuda: bool = True) -> torch.device:
    """The device to train/evaluate on.

    ``use_cuda`` False (cfg ``USE_CUDA``) or a negative ``gpu_id`` selects the CPU silently.
    Without CUDA the CPU is used and ONE warning is issued per process (not per call). A GPU
    index that does not exist is an error naming the visible count.
    """
    if not use_cuda or gpu_id is None or int(gpu_id) < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if "no-cuda" not in _warned:
            _warned.add("no-cuda")
            msg = (f"CUDA is not available: running on the CPU instead of cuda:{gpu_id} "
                   f"(this is slow for real data; set USE_CUDA False or --gpu_id -1 to silence this)")
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if int(gpu_id) >= count:
        raise ValueError(f"--gpu_id {gpu_id}: only {count} CUDA device(s) visible "
                         f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})")
    torch.cuda.set_device(int(gpu_id))
    return torch.device(f"cuda:{int(gpu_id)}")


def autocast(device: torch.device, amp: str):
    """``torch.autocast`` for TRAIN.AMP (``fp16`` / ``bf16``) on ``device``; a no-op for ``none``."""
    if amp == "none":
        return nullcontext()
    if amp not in AMP_DTYPES:
        raise ValueError(f"TRAIN.AMP={amp!r}: use none, fp16 or bf16")
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def apply_tf32(enabled: bool) -> None:
    """TRAIN.TF32: whether float32 matrix products (``torch.backends.cuda.matmul``) and cuDNN
    convolutions may round their inputs to TF32 on Ampere and newer GPUs (docs/scaling.md#gpu-notes).

    Both at once: torch's own defaults differ (matmul off since torch 1.12, cuDNN on), so ViTPose's
    Linear layers would run in true float32 while every convolution used TF32. Process-wide; no
    effect on the CPU or older GPUs. Which kernels a GPU then picks only a GPU run shows.
    """
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
