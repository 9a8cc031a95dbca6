"""VideoPose3D temporal convolution model, key-compatible with facebookresearch/VideoPose3D.

Shapes: N sequences, T frames, J joints. ``forward``: ``(N, T, J_in, in_features)`` ->
``(N, T - RF + 1, J_out, 3)`` where RF = receptive field (1 for L2D's ``filter_widths=[1,1,1]``).
Keys: ``expand_conv, expand_bn, layers_conv.{k}, layers_bn.{k}, shrink``.
"""
import torch.nn as nn
import torch.nn.functional as F


class TemporalModel(nn.Module):
    """Dilated 1D convolutions over time with residual blocks (Pavllo et al. 2019)."""

    output_layer = "shrink"   # width-1 convolution, one output channel per joint coordinate (model_3d.init)

    def __init__(self, num_joints_in: int, in_features: int, num_joints_out: int, filter_widths,
                 causal: bool = False, dropout: float = 0.25, channels: int = 1024, dense: bool = False):
        super().__init__()
        filter_widths = [int(w) for w in filter_widths]
        if any(w % 2 == 0 for w in filter_widths):
            raise ValueError(f"TemporalModel: filter widths must be odd, got {filter_widths}")
        self.num_joints_in = num_joints_in
        self.in_features = in_features
        self.num_joints_out = num_joints_out
        self.filter_widths = filter_widths

        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU()
        self.expand_conv = nn.Conv1d(num_joints_in * in_features, channels, filter_widths[0], bias=False)
        self.expand_bn = nn.BatchNorm1d(channels, momentum=0.1)

        # pad[i] = frames trimmed on each side by block i; causal_shift moves the residual window.
        self.pad = [filter_widths[0] // 2]
        self.causal_shift = [filter_widths[0] // 2 if causal else 0]
        convs, bns = [], []
        dilation = filter_widths[0]
        for width in filter_widths[1:]:
            self.pad.append((width - 1) * dilation // 2)
            self.causal_shift.append(width // 2 * dilation if causal else 0)
            convs.append(nn.Conv1d(channels, channels, 2 * self.pad[-1] + 1 if dense else width,
                                   dilation=1 if dense else dilation, bias=False))
            bns.append(nn.BatchNorm1d(channels, momentum=0.1))
            convs.append(nn.Conv1d(channels, channels, 1, bias=False))
            bns.append(nn.BatchNorm1d(channels, momentum=0.1))
            dilation *= width
        self.layers_conv = nn.ModuleList(convs)
        self.layers_bn = nn.ModuleList(bns)
        self.shrink = nn.Conv1d(channels, num_joints_out * 3, 1)

    def receptive_field(self) -> int:
        return 1 + 2 * sum(self.pad)

    def set_bn_momentum(self, momentum: float) -> None:
        self.expand_bn.momentum = momentum
        for bn in self.layers_bn:
            bn.momentum = momentum

    def forward(self, x):
        if x.dim() != 4 or x.shape[-2] != self.num_joints_in or x.shape[-1] != self.in_features:
            raise ValueError(f"TemporalModel expects (N, T, {self.num_joints_in}, {self.in_features}), "
                             f"got {tuple(x.shape)}")
        n, t = x.shape[0], x.shape[1]
        if self.receptive_field() == 1:
            return self._forward_per_frame(x.reshape(n * t, -1)).reshape(n, t, self.num_joints_out, 3)
        x = x.reshape(n, t, -1).permute(0, 2, 1)                     # (N, J*F, T)
        x = self.drop(self.relu(self.expand_bn(self.expand_conv(x))))
        for i in range(len(self.pad) - 1):
            pad, shift = self.pad[i + 1], self.causal_shift[i + 1]
            res = x[:, :, pad + shift: x.shape[2] - pad + shift]
            x = self.drop(self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x))))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
        x = self.shrink(x).permute(0, 2, 1)                          # (N, T', J*3)
        return x.reshape(n, -1, self.num_joints_out, 3)

    def _forward_per_frame(self, x):
        """(N*T, J*F) -> (N*T, J*3) when every filter is 1 wide (L2D's lifters).

        Each layer then acts on every frame alone, so all frames are rows of one matrix product:
        same math as the convolutions (BatchNorm over the rows = over batch and time), and on CPUs
        2-3x faster in the backward than the convolution kernel for these shapes.
        """
        x = self.drop(self.relu(self.expand_bn(F.linear(x, self.expand_conv.weight[..., 0]))))
        for i in range(len(self.pad) - 1):
            res = x
            x = self.drop(self.relu(self.layers_bn[2 * i](F.linear(x, self.layers_conv[2 * i].weight[..., 0]))))
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](
                F.linear(x, self.layers_conv[2 * i + 1].weight[..., 0]))))
        return F.linear(x, self.shrink.weight[..., 0], self.shrink.bias)
