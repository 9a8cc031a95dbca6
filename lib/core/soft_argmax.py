"""Soft-argmax over heatmaps at the cost of one read of them: a window around each map's peak
wherever a bound proves it gives the full-map result, the full map elsewhere.

Shapes: M maps (N * J flattened), each H x W; coordinates (x, y) = (column, row) in heatmap pixels.

Why a window. With ``beta = 100`` a trained detector's map (peak near 1, background near 0) puts
almost every pixel about 100 logits below the peak, so its softmax weight is below 1e-43 of the
peak's: the expectation is decided by a few pixels around the peak. A full softmax still reads,
exponentiates and (in the backward) revisits every pixel, and on CPUs the denormal numbers it meets
cost extra. Here one pass over each map gives its maximum per ``BLOCK_PX`` x ``BLOCK_PX`` block;
from those, the peak, a window of 2 x 2 blocks holding it (its block and the neighbours on the side
of the larger neighbouring maximum, across and down), and the largest value outside the window.
The expectation is then taken over the window only, for the maps whose bound (below) is at most
``tol_px``; the other maps (flat, broad, multi-modal, untrained) take the full-map path unchanged.

The bound. Write z_i = beta * h_i - max_k beta * h_k <= 0 (beta >= 0; a negative beta is the same
problem on -h), w_i = exp(z_i), W the window (it holds the peak, whose w = 1), O the n_O pixels
outside it, Z_W = sum_W w_i >= 1, Z_O = sum_O w_i, and m_O >= max_O z_i (the largest block maximum
among blocks not wholly inside W). Then

* mass outside: q = Z_O / (Z_W + Z_O) <= Z_O / Z_W <= n_O exp(m_O) =: eps;
* coordinates: the full mean is x = (1 - q) x_W + q x_O with x_W, x_O the means over W and O, both
  in [0, W - 1], so |x - x_W| = q |x_O - x_W| <= eps (W - 1), and |y - y_W| <= eps (H - 1);
* gradients: dx/dh_i = beta p_i (gx_i - x) with p_i = w_i / (Z_W + Z_O); the window path gives
  beta p'_i (gx_i - x_W) on W (p'_i = w_i / Z_W = p_i / (1 - q)) and 0 on O. On O the dropped terms
  sum to at most |beta| q (W - 1); on W, p_i (gx_i - x) - p'_i (gx_i - x_W)
  = -p'_i (q (gx_i - x) + (x - x_W)), which sums to at most 2 q (W - 1). So for upstream gradients
  (g_x, g_y) the L1 norm over the map of the heatmap-gradient error is at most
  3 |beta| eps ((W - 1) |g_x| + (H - 1) |g_y|).

A map takes the window when ``bound = eps * max(W - 1, H - 1) <= tol_px``: its coordinates are
then within ``tol_px`` (default 1e-6 px, below float32's own rounding of a coordinate near 50) of
the full-map soft-argmax, and its gradient within ``3 |beta| tol_px (|g_x| + |g_y|)`` in L1. The
bound is evaluated in float64 from the exact float32 values, so rounding cannot flip it. When the
window covers the whole map n_O = 0 and the window path is the full path.

One numeric path per device. Choosing the path per map needs to know which maps fail the bound.
On the CPU that costs nothing, so the window maps take the window and the failing maps alone go
through the full softmax (torch operations). On other devices the choice would need a
device-to-host copy (a synchronisation of the stream every training step), and a GPU reads the
full maps at a small fraction of a step's time with no denormal penalty: there every map takes
the plain full-map expectation. ``tol_px <= 0`` forces the full map on the CPU too.

Both paths raise every exponent to ``log(tiny) + log(count) + 1`` (count = pixels summed) so that
no float32 weight is denormal: each weight is then at least e * count * tiny, every probability at
least e * tiny, and each probability moves by less than 3e-34 (a coordinate by < 1e-27 px).
"""
import functools
import math
from typing import Optional
import torch
from torch.autograd.function import once_differentiable

BLOCK_PX = 8          # block side of the one-pass maxima; divides the usual heatmap sizes (48, 64, 72, 96)
WINDOW_TOL_PX = 1e-6  # largest coordinate error (heatmap px) the window may cause
# Largest exponent. beta * h - beta * peak is <= 0 in exact arithmetic; for a diverged detector (maps
# ~1e9) the two float32 products round differently, the peak's exponent can land at +1e4, exp()
# overflows and inf / inf is NaN. Ordinary maps round to within ~1e-5 of 0, far below the cap, so
# their numbers do not change (a cap at 0 would move them by that rounding); exp(50) * H * W is finite.
EXP_CAP = 50.0


def _exp_floor(dtype: torch.dtype, count: int) -> float:
    return math.log(torch.finfo(dtype).tiny) + math.log(count) + 1.0


def _block_max(maps: torch.Tensor, block: int) -> torch.Tensor:
    """(M, H, W) -> (M, ceil(H / block), ceil(W / block)) maximum of each block (partial last blocks).

    Rows are reduced first: that reduction runs over a non-innermost axis with contiguous rows, which
    vectorises along W and is the one full read of the maps. The columns of the 1/block as large
    result are then reduced by a max pooling, which is much faster on the CPU than a reduction over
    a short innermost axis (``ceil_mode`` gives the partial last block; NaN propagates as in amax).
    """
    m, h, w = maps.shape
    h0 = h - h % block
    parts = []
    if h0:
        parts.append(maps[:, :h0].reshape(m, h0 // block, block, w).amax(dim=2))
    if h0 < h:
        parts.append(maps[:, h0:].amax(dim=1, keepdim=True))
    rows = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
    nby = rows.shape[1]
    cols = torch.nn.functional.max_pool1d(rows.reshape(m * nby, 1, w), block, block, ceil_mode=True)
    return cols.reshape(m, nby, -1)


@functools.lru_cache(maxsize=32)
def _window_table(h: int, w: int, block: int, device: str):
    """Per block (flattened index ``by * nbx + bx``): its four neighbours (left, right, up, down) as
    indices into the block maxima, ``nby * nbx`` standing for "none" (past the border); and for
    the 2 x 2-block window whose upper-left block it is, the window's corner (y0, x0), clamped into
    the map, and which blocks lie wholly inside that window. Depends on the sizes only, so it is
    built once per shape: the plan picks rows of it instead of rebuilding masks every call."""
    nby, nbx = -(-h // block), -(-w // block)
    nb = nby * nbx
    sy, sx = min(2 * block, h), min(2 * block, w)
    by, bx = torch.arange(nby)[:, None].expand(nby, nbx), torch.arange(nbx)[None, :].expand(nby, nbx)
    flat = by * nbx + bx
    none = torch.full_like(flat, nb)
    neighbours = torch.stack((torch.where(bx > 0, flat - 1, none), torch.where(bx < nbx - 1, flat + 1, none),
                              torch.where(by > 0, flat - nbx, none), torch.where(by < nby - 1, flat + nbx, none)),
                             dim=-1).reshape(nb, 4)
    y0 = (torch.arange(nby) * block).clamp(max=h - sy)                           # (nby,) per start row
    x0 = (torch.arange(nbx) * block).clamp(max=w - sx)
    start_y, start_x = torch.arange(nby) * block, torch.arange(nbx) * block
    end_y, end_x = (start_y + block).clamp(max=h), (start_x + block).clamp(max=w)
    in_y = (start_y >= y0[:, None]) & (end_y <= (y0 + sy)[:, None])               # (start row, block row)
    in_x = (start_x >= x0[:, None]) & (end_x <= (x0 + sx)[:, None])
    inside = (in_y[:, None, :, None] & in_x[None, :, None, :]).reshape(nb, nb)
    corner_y = y0[:, None].expand(nby, nbx).reshape(-1)
    corner_x = x0[None, :].expand(nby, nbx).reshape(-1)
    dev = torch.device(device)
    steps = torch.tensor([1, nbx])                                              # block index per step left, up
    return neighbours.to(dev), steps.to(dev), corner_y.to(dev), corner_x.to(dev), inside.to(dev), (sy, sx)


def window_plan(maps: torch.Tensor, beta: float, tol_px: float = WINDOW_TOL_PX, block: int = BLOCK_PX):
    """Per map: the peak, the window and whether the window is provably exact (module docstring).

    ``maps`` (M, H, W) with ``beta >= 0``. Returns a dict: ``peak`` (M,) maximum of each map (maps'
    dtype); ``y0``, ``x0`` (M,) long, upper-left corner of the window; ``size`` (sy, sx) of every
    window; ``bound`` (M,) float64, ``eps * max(W - 1, H - 1)``; ``use_window`` (M,) bool,
    ``bound <= tol_px`` (False for NaN maps).
    """
    if beta < 0:
        raise ValueError(f"window_plan: beta must be >= 0 (negate the maps for beta < 0), got {beta}")
    m, h, w = maps.shape
    bmax = _block_max(maps, block).reshape(m, -1)                    # (M, nby * nbx)
    peak, where = bmax.max(dim=-1)                                   # first maximum, row-major blocks
    neighbours, steps, corner_y, corner_x, inside, (sy, sx) = _window_table(h, w, block, str(maps.device))
    # The window is the peak's block and its neighbours on the side of the larger neighbouring
    # maximum, across and down: the peak then lies at least block / 2 px from the window's edge
    # wherever a map falls off around it evenly (a missing neighbour counts as -inf).
    padded = torch.nn.functional.pad(bmax, (0, 1), value=-math.inf)
    pairs = padded.gather(1, neighbours.index_select(0, where)).view(m, 2, 2)   # (left, right), (up, down)
    back = (pairs[..., 0] > pairs[..., 1]).long()                            # (M, 2): one block left, up
    start = where - (back * steps).sum(dim=-1)
    y0, x0 = corner_y.index_select(0, start), corner_x.index_select(0, start)
    # Every pixel outside the window lies in a block that is not wholly inside it, so the largest
    # such block maximum bounds them all.
    max_out = bmax.masked_fill(inside.index_select(0, start), -math.inf).amax(dim=-1)
    # float64 from the exact stored values: the test cannot be flipped by rounding (MPS has no float64).
    f64 = torch.float64 if maps.device.type != "mps" else torch.float32
    gap = max_out.to(f64) - peak.to(f64)                                  # <= 0, -inf when O is empty
    rel = torch.exp(gap * beta)                                           # NaN for NaN maps
    if beta == 0:                          # no outside pixels (gap = -inf) weigh 0, not exp(0 * -inf)
        rel = torch.where(gap == -math.inf, 0.0, rel)
    bound = rel * float((h * w - sy * sx) * max(w - 1, h - 1))
    return {"peak": peak, "y0": y0, "x0": x0, "size": (sy, sx), "bound": bound, "use_window": bound <= tol_px}


# ----------------------------------------------------------------------------- the two paths
def _windows(flat: torch.Tensor, width: int, size) -> torch.Tensor:
    """Every ``size`` window of the maps' storage as one strided view: view[k] starts at flat[k].

    Windows are then gathered and scattered by their start offsets alone (an (M,) index): no
    per-pixel index is built. The view overlaps itself, but the windows of different maps never
    share an element, so writing them through it is well defined."""
    sy, sx = size
    return flat.as_strided((flat.numel() - (sy - 1) * width - sx + 1, sy, sx), (1, width, 1))


def _window_forward(flat: torch.Tensor, plan, maps_shape, beta: float, index_maps: Optional[torch.Tensor]):
    """Expectation over each map's window. ``flat`` is the maps' storage as one vector; ``index_maps``
    the maps to do (None: all). -> (coords (Mw, 2), saved tensors for the backward)."""
    m, h, w = maps_shape
    sy, sx = plan["size"]
    dev, dtype = flat.device, flat.dtype
    y0, x0, peak = plan["y0"], plan["x0"], plan["peak"]
    ids = torch.arange(m, device=dev)
    if index_maps is not None:
        y0, x0, peak, ids = y0[index_maps], x0[index_maps], peak[index_maps], index_maps
    start = ids * (h * w) + y0 * w + x0                                        # (Mw,) into flat
    window = _windows(flat, w, (sy, sx)).index_select(0, start)               # (Mw, sy, sx)
    weight = torch.add(peak.reshape(-1, 1, 1) * -beta, window, alpha=beta)  # beta * (h - peak) <= 0
    weight = weight.clamp_(min=_exp_floor(dtype, sy * sx), max=EXP_CAP).exp_()
    col, row = weight.sum(dim=1), weight.sum(dim=2)                          # (Mw, sx), (Mw, sy)
    total = col.sum(dim=-1)
    # Local coordinates inside the window, then the window's corner: the sums stay small.
    local_x = (col * torch.arange(sx, dtype=dtype, device=dev)).sum(dim=-1) / total
    local_y = (row * torch.arange(sy, dtype=dtype, device=dev)).sum(dim=-1) / total
    coords = torch.stack((local_x + x0.to(dtype), local_y + y0.to(dtype)), dim=-1)
    return coords, (weight, total, local_x, local_y, start, w)


def _window_backward(grad_flat: torch.Tensor, grad_coords: torch.Tensor, saved, beta: float):
    """Writes d loss / d h over each window into ``grad_flat`` (the rest of a map's gradient is 0)."""
    weight, total, local_x, local_y, start, width = saved
    _, sy, sx = weight.shape
    g = grad_coords * (beta / total).unsqueeze(-1)
    term_x = (torch.arange(sx, dtype=weight.dtype, device=weight.device) - local_x[:, None]) * g[:, 0:1]
    term_y = (torch.arange(sy, dtype=weight.dtype, device=weight.device) - local_y[:, None]) * g[:, 1:2]
    _windows(grad_flat, width, (sy, sx)).index_copy_(0, start, weight * (term_y[:, :, None] + term_x[:, None, :]))


def _full_forward(maps: torch.Tensor, peak: torch.Tensor, beta: float):
    """Softmax over every pixel of each (H, W) map. -> (coords (M, 2), saved tensors)."""
    _, h, w = maps.shape
    dtype, dev = maps.dtype, maps.device
    weight = torch.add(peak.reshape(-1, 1, 1) * -beta, maps, alpha=beta)
    weight = weight.clamp_(min=_exp_floor(dtype, h * w), max=EXP_CAP).exp_()
    # Marginals first: (M, W) and (M, H) instead of two full-size products, normalised there.
    # Elementwise ops, not matmul, so that autocast cannot lower them to half precision.
    col, row = weight.sum(dim=1), weight.sum(dim=2)
    total = col.sum(dim=-1)
    x = (col * torch.arange(w, dtype=dtype, device=dev)).sum(dim=-1) / total
    y = (row * torch.arange(h, dtype=dtype, device=dev)).sum(dim=-1) / total
    return torch.stack((x, y), dim=-1), (weight, total, x, y)


def _full_backward(grad_coords: torch.Tensor, saved, beta: float) -> torch.Tensor:
    """(M, 2) -> (M, H, W): d x / d h_i = beta * p_i * (gx_i - x); the small per-row/column factors
    carry 1 / total, which spares a pass over the full maps."""
    weight, total, x, y = saved
    _, h, w = weight.shape
    g = grad_coords * (beta / total).unsqueeze(-1)
    term_x = (torch.arange(w, dtype=weight.dtype, device=weight.device) - x[:, None]) * g[:, 0:1]
    term_y = (torch.arange(h, dtype=weight.dtype, device=weight.device) - y[:, None]) * g[:, 1:2]
    return weight * (term_y[:, :, None] + term_x[:, None, :])


class _SoftArgmax(torch.autograd.Function):
    """Expected (x, y) under softmax(beta * heatmap) per map, with a hand-written backward (no
    (M, H, W) autograd intermediates are kept). On the CPU each map takes the window or the full
    map as its plan decides; elsewhere (and with ``tol_px <= 0``) every map takes the full map."""

    @staticmethod
    def forward(ctx, heatmaps, beta, tol_px):
        n, j, h, w = heatmaps.shape
        m = n * j
        # Half-precision softmax with beta=100 loses the sub-pixel information; decode in fp32+.
        dtype = torch.promote_types(heatmaps.dtype, torch.float32)
        maps = heatmaps.reshape(m, h, w).to(dtype).contiguous()
        sign = 1.0
        if beta < 0:                       # softmax(beta h) = softmax(|beta| (-h)): weights the minimum
            maps, beta, sign = -maps, -beta, -1.0
        ctx.beta, ctx.sign, ctx.shape = beta, sign, (m, h, w)
        ctx.in_dtype, ctx.in_shape = heatmaps.dtype, heatmaps.shape
        if maps.device.type != "cpu" or tol_px <= 0:
            coords, saved_f = _full_forward(maps, maps.amax(dim=(1, 2)), beta)
            ctx.parts = (None, saved_f, None, None)
            return coords.reshape(n, j, 2)
        # CPU: reading the plan's decision costs nothing, so each map goes down one path only:
        # the window maps first, then the full map for the others.
        plan = window_plan(maps, beta, tol_px)
        use, peak = plan["use_window"], plan["peak"]
        win_ids = torch.nonzero(use).reshape(-1)
        coords, saved_w = torch.empty(m, 2, dtype=dtype), None
        if win_ids.numel() == m:
            coords, saved_w = _window_forward(maps.reshape(-1), plan, (m, h, w), beta, None)
            win_ids = None
        elif win_ids.numel():
            coords_w, saved_w = _window_forward(maps.reshape(-1), plan, (m, h, w), beta, win_ids)
            coords.index_copy_(0, win_ids, coords_w)
        full_ids = torch.nonzero(~use).reshape(-1)
        saved_f = None
        if full_ids.numel() == m:                  # no window map: the full path alone, nothing copied
            coords, saved_f = _full_forward(maps, peak, beta)
            full_ids = None
        elif full_ids.numel():
            coords_f, saved_f = _full_forward(maps.index_select(0, full_ids), peak[full_ids], beta)
            coords.index_copy_(0, full_ids, coords_f)
        ctx.parts = (saved_w, saved_f, win_ids, full_ids)
        return coords.reshape(n, j, 2)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_coords):
        m, h, w = ctx.shape
        beta = ctx.beta
        g = grad_coords.reshape(m, 2).to(torch.promote_types(ctx.in_dtype, torch.float32))
        saved_w, saved_f, win_ids, full_ids = ctx.parts
        if saved_w is None:                                     # every map took the full path
            grad = _full_backward(g, saved_f, beta)
        else:
            grad = torch.zeros(m, h, w, dtype=g.dtype, device=g.device)
            _window_backward(grad.reshape(-1), g if win_ids is None else g[win_ids], saved_w, beta)
            if saved_f is not None:
                grad.index_copy_(0, full_ids, _full_backward(g[full_ids], saved_f, beta))
        if ctx.sign < 0:
            grad = grad.neg_()
        return grad.reshape(ctx.in_shape).to(ctx.in_dtype), None, None


def windowed_soft_argmax(heatmaps: torch.Tensor, beta: float, tol_px: float = WINDOW_TOL_PX) -> torch.Tensor:
    """(N, J, H, W) -> (N, J, 2) expected (x, y) in heatmap px (module docstring: the window on the
    CPU, the full map on other devices and for ``tol_px <= 0``)."""
    n, j, h, w = heatmaps.shape
    if h == 0 or w == 0:
        raise ValueError(f"soft_argmax: empty heatmaps of shape {tuple(heatmaps.shape)}")
    if n * j == 0:
        return heatmaps.new_zeros((n, j, 2), dtype=torch.promote_types(heatmaps.dtype, torch.float32))
    return _SoftArgmax.apply(heatmaps, float(beta), float(tol_px))
