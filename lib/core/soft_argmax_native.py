"""The CPU's fused kernels of the windowed soft-argmax (``soft_argmax_kernels.c``), through ctypes.

``kernels_for(maps)`` gives the loaded library when ``maps`` can use it (float32 on the CPU, the
library built: ``lib.utils.native_build``), else None and the caller keeps the torch operations.
Shapes as in ``lib.core.soft_argmax``: M maps of H x W, windows of sy x sx.
"""
import ctypes
from pathlib import Path
from typing import Optional

import torch

from lib.utils.native_build import load_native

SOURCE = Path(__file__).with_name("soft_argmax_kernels.c")
ABI = 2
_P, _I, _F, _D, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_double, ctypes.c_int
_ready = {}


def _library() -> Optional[ctypes.CDLL]:
    lib = load_native(SOURCE)
    if lib is None:
        return None
    if id(lib) not in _ready:
        lib.l2d_sa_abi.restype = _INT
        lib.l2d_sa_forward.restype = _INT
        lib.l2d_sa_forward.argtypes = [_P, _I, _I, _I, _I, _F, _D, _F, _F, _INT] + [_P] * 10
        lib.l2d_sa_backward.restype = None
        lib.l2d_sa_backward.argtypes = [_P, _I, _I, _I, _I, _F, _INT] + [_P] * 8
        lib.l2d_sa_shift.restype = None
        lib.l2d_sa_shift.argtypes = [_P, _I, _I, _I, _P, _P, _P]
        _ready[id(lib)] = lib.l2d_sa_abi() == ABI
    return lib if _ready[id(lib)] else None


def kernels_for(maps: torch.Tensor) -> Optional[ctypes.CDLL]:
    """The library, when ``maps`` (M, H, W) is float32, contiguous and on the CPU; else None."""
    if maps.device.type != "cpu" or maps.dtype != torch.float32 or not maps.is_contiguous():
        return None
    return _library()


def cpu_kernels_name() -> str:
    """What the CPU's soft-argmax runs as, for benchmark output: "C" or "torch"."""
    return "C" if _library() is not None else "torch"


def forward(lib, maps: torch.Tensor, beta: float, tol_px: float, block: int, lo: float, hi: float,
            shift: Optional[torch.Tensor] = None):
    """(M, H, W) float32, beta >= 0 -> (coords (M, 2), use (M,) bool, peak (M,), saved for :func:`backward`).

    ``coords`` holds the window maps' results; rows where ``use`` is False are undefined (the
    caller fills them from the full map, with ``peak`` as torch.amax gives it). ``shift`` (M, 2)
    float32, when given, receives the window maps' quarter-pixel shifts (:func:`quarter_shift`
    for the others)."""
    m, h, w = maps.shape
    sy, sx = min(2 * block, h), min(2 * block, w)
    coords = torch.empty(m, 2)
    peak, total, lx, ly = (torch.empty(m) for _ in range(4))
    y0, x0 = torch.empty(m, dtype=torch.int64), torch.empty(m, dtype=torch.int64)
    use = torch.empty(m, dtype=torch.bool)
    weights = torch.empty(m, sy, sx)
    status = lib.l2d_sa_forward(maps.data_ptr(), m, h, w, block, beta, tol_px, lo, hi, torch.get_num_threads(),
                                coords.data_ptr(), peak.data_ptr(), y0.data_ptr(), x0.data_ptr(), use.data_ptr(),
                                weights.data_ptr(), total.data_ptr(), lx.data_ptr(), ly.data_ptr(),
                                None if shift is None else shift.data_ptr())
    if status != 0:
        raise MemoryError("soft-argmax kernel: no memory for its per-thread scratch")
    return coords, use, peak, (y0, x0, use, weights, total, lx, ly, block)


def backward(lib, grad: torch.Tensor, grad_coords: torch.Tensor, saved, beta: float) -> None:
    """Writes every window map's gradient into ``grad`` (M, H, W) float32 (zeros outside its window)."""
    y0, x0, use, weights, total, lx, ly, block = saved
    m, h, w = grad.shape
    gc = grad_coords.to(torch.float32).contiguous()
    lib.l2d_sa_backward(grad.data_ptr(), m, h, w, block, beta, torch.get_num_threads(), gc.data_ptr(),
                        y0.data_ptr(), x0.data_ptr(), use.data_ptr(), weights.data_ptr(), total.data_ptr(),
                        lx.data_ptr(), ly.data_ptr())


def quarter_shift(lib, maps: torch.Tensor, ids: torch.Tensor, coords: torch.Tensor, shift: torch.Tensor) -> None:
    """HRNet's quarter-pixel shift of the maps ``ids`` (M, H, W float32) at their ``coords`` (M, 2)
    into ``shift`` (M, 2), as ``lib.core.heatmap``'s post-processing computes it."""
    m, h, w = maps.shape
    ids = ids.to(torch.int64).contiguous()
    lib.l2d_sa_shift(maps.data_ptr(), h, w, ids.numel(), ids.data_ptr(), coords.contiguous().data_ptr(),
                     shift.data_ptr())
