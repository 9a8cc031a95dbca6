"""The heatmap layer of the built-in detectors, computed in float32 also under autocast.

With ``TRAIN.AMP bf16`` everything inside autocast runs in bfloat16, whose 7-bit mantissa resolves
steps of 0.004-0.008 near a heatmap's peak of 0.5-1: 0.4-0.8 logits at the soft-argmax's beta of
100. The sub-pixel joint coordinates, the 3D-guidance gradients through them and the validation
MPJPE would then move on that grid. :class:`Float32Conv2d` is the last convolution of HRNet,
SimpleBaseline and ViTPose (``final_layer``): it casts its input (the detector's features, bf16
or fp16 under autocast) to float32 and convolves with autocast off, so the heatmaps come out in
float32 (docs/scaling.md#gpu-notes). It is an ``nn.Conv2d``: the same parameters, state-dict keys,
initialisation and checkpoints. Outside autocast it is the plain convolution.

On a GPU, ``TRAIN.TF32`` still decides whether this float32 convolution may round its inputs to
TF32's 10-bit mantissa (8x finer than bf16's 7 bits, with float32 accumulation): only a GPU run shows
the cuDNN kernel chosen.
"""
import torch
import torch.nn as nn

# Devices whose autocast this layer turns off; on any other device it only casts.
_AUTOCAST_DEVICES = ("cuda", "cpu")


class Float32Conv2d(nn.Conv2d):
    """``nn.Conv2d`` computed in (at least) float32 with autocast off: float32 output whatever the input."""

    def _float32_forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = torch.promote_types(self.weight.dtype, torch.float32)
        bias = None if self.bias is None else self.bias.to(dtype)
        return self._conv_forward(x.to(dtype), self.weight.to(dtype), bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type in _AUTOCAST_DEVICES:
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self._float32_forward(x)
        return self._float32_forward(x)
