"""SimpleBaseline (Martinez et al. 2017) MLP, key-compatible with motokimura/3d-pose-baseline-pytorch.

Shapes: N batch, J joints. Input z-scored 2D ``(N, 2J)`` joint-major ``[x0, y0, x1, y1, ...]``;
output z-scored 3D ``(N, 3J)`` joint-major.  State-dict keys: ``w1, bn1,
linear_stages.{i}.{w1, bn1, w2, bn2}, w2``.
"""
import torch.nn as nn


class ResidualLinear(nn.Module):
    """Two Linear-BN-ReLU-Dropout layers with an identity shortcut, ``(N, C) -> (N, C)``."""

    def __init__(self, linear_size: int, p_dropout: float):
        super().__init__()
        self.w1 = nn.Linear(linear_size, linear_size)
        self.bn1 = nn.BatchNorm1d(linear_size)
        self.w2 = nn.Linear(linear_size, linear_size)
        self.bn2 = nn.BatchNorm1d(linear_size)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p_dropout)

    def forward(self, x):
        h = self.dropout(self.relu(self.bn1(self.w1(x))))
        h = self.dropout(self.relu(self.bn2(self.w2(h))))
        return x + h


class SimpleBaseline(nn.Module):
    """``(N, 2J) -> (N, 3J)`` (z-scored in and out)."""

    def __init__(self, num_joints: int = 17, linear_size: int = 1024, num_stages: int = 2,
                 p_dropout: float = 0.5):
        super().__init__()
        self.num_joints = num_joints
        self.w1 = nn.Linear(num_joints * 2, linear_size)
        self.bn1 = nn.BatchNorm1d(linear_size)
        self.linear_stages = nn.ModuleList(ResidualLinear(linear_size, p_dropout)
                                           for _ in range(num_stages))
        self.w2 = nn.Linear(linear_size, num_joints * 3)
        self.relu = nn.ReLU()
        self.dropout = nn.Dropout(p_dropout)
        self.apply(_init_weights)

    def forward(self, x):
        y = self.dropout(self.relu(self.bn1(self.w1(x))))
        for stage in self.linear_stages:
            y = stage(y)
        return self.w2(y)


def _init_weights(module):
    # Kaiming-normal (fan_in, ReLU) weights and zero biases; irrelevant once weights are loaded.
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
