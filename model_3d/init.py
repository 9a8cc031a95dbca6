"""Output initialisation of metre-regressing lifters at the training mean pose.

Shapes: N samples, J joints, C features. VideoPose3D, IGANet and MixSTE regress root-relative
metres directly; their random output layers start about a metre from any real pose, so a short
run spends its steps walking there (SimpleBaseline does not: its z-scored output is
de-normalised with the data stats). :func:`init_output_at_mean_pose` changes only the values of
the network's last layer (:func:`output_layer_name`: the class attribute ``output_layer`` where the
network names it, else its last layer with a bias and 3 or 3 x J outputs): same keys, same forward.

* One output row per joint coordinate (VideoPose3D's ``shrink``, (3J, C[, 1])): row ``k`` of the
  weights is multiplied by the target std ``s_k`` (metres) and the bias set so that the mean
  input is mapped exactly to the mean pose (eval mode).
* One row per coordinate shared by all joints (IGANet's ``fcn``, MixSTE's ``head.1``, (3, C)):
  a bias alone cannot hold a per-joint mean, and at initialisation the joints' features span only a
  few dimensions (MixSTE's position embedding starts at zero), so solving the mean pose exactly
  from the mean input needs huge weights. Instead the rows are scaled by the joint-averaged std of
  their coordinate and then refitted by ridge regression of the training targets on the layer's
  input features over the given samples (free bias, penalty ``RIDGE`` on the weight change): the
  least-squares readout of the random features, shrunk towards their high-variance directions
  (a weaker penalty fits the training poses closer but with weights the first training steps
  undo violently). On the demo data it starts near or below the mean-pose error (IGANet 3 x 512:
  150 mm, MixSTE 64 x 4: 207 mm, vs 214 mm; the random networks: 765 and 1003 mm).
"""
import torch
import torch.nn as nn


def _net_input(mean_input: torch.Tensor, layout: str) -> torch.Tensor:
    j = mean_input.shape[0]
    if layout == "frames":
        return mean_input.reshape(1, 1, j, 2)
    if layout == "joints":
        return mean_input.reshape(1, j, 2)
    return mean_input.reshape(1, 2 * j)


RIDGE = 1.0           # penalty on the weight change, relative to the features' mean eigenvalue


def _forward_capture(net, layer, x):
    feats = {}
    hook = layer.register_forward_pre_hook(lambda _m, args: feats.__setitem__("x", args[0].detach()))
    was = net.training
    net.eval()
    try:
        out = net(x)
    finally:
        hook.remove()
        net.train(was)
    return out, feats.get("x")


def output_layer_name(net: nn.Module, num_joints: int):
    """The name of ``net``'s output layer, or None when it has no layer the initialisation can set.

    ``net.output_layer`` where the network names it (the built-ins do); otherwise the last module,
    in registration order, with a weight, a bias and 3 or 3 x ``num_joints`` outputs (a user's
    network need not know about this initialisation).
    """
    name = getattr(net, "output_layer", None)
    if name:
        return name
    found = None
    for mod_name, mod in net.named_modules():
        weight, bias = getattr(mod, "weight", None), getattr(mod, "bias", None)
        if (isinstance(weight, nn.Parameter) and isinstance(bias, nn.Parameter) and weight.dim() >= 2
                and weight.shape[0] in (3, 3 * int(num_joints))):
            found = mod_name
    return found


@torch.no_grad()
def init_output_at_mean_pose(net: nn.Module, layout: str, inputs: torch.Tensor, targets_m: torch.Tensor) -> nn.Module:
    """Set ``net``'s output layer in place (see the module doc); returns ``net``.

    ``inputs`` (N, J, 2): training samples in the network's input space (e.g. screen-normalised 2D);
    ``targets_m`` (N, J, 3): their root-relative 3D targets in metres. A few thousand samples suffice.
    """
    n, j = targets_m.shape[:2]
    name = output_layer_name(net, j)
    if not name:
        raise ValueError(f"{type(net).__name__} has no output layer with a bias and 3 or 3 x {j} outputs "
                         f"(nor an output_layer attribute naming one); mean-pose initialisation needs one")
    layer = net.get_submodule(name)
    weight, bias = layer.weight, layer.bias
    if bias is None:
        raise ValueError(f"{type(net).__name__}.{name} has no bias; mean-pose initialisation needs one")
    dev, dt = weight.device, weight.dtype
    y64 = targets_m.to(dev).double()
    mean64, std64 = y64.mean(dim=0), y64.std(dim=0)
    w64 = weight.double().reshape(weight.shape[0], -1)         # (out, C)
    if weight.shape[0] == 3 * j:
        out0, _ = _forward_capture(net, layer, _net_input(inputs.to(dev, dt).mean(dim=0), layout))
        scale = std64.reshape(-1)                              # joint-major, as the layer's rows
        # out0 = W h + b  ->  (s W) h + b' = mean  with  b' = mean - s (out0 - b)
        new_bias = mean64.reshape(-1) - scale * (out0.reshape(-1).double() - bias.double())
        new_w = w64 * scale[:, None]
    elif weight.shape[0] == 3:
        x = inputs.to(dev, dt)
        _, feat = _forward_capture(net, layer, x.unsqueeze(1) if layout == "frames" else
                                   x.reshape(n, -1) if layout == "flat" else x)
        if feat is None:
            raise RuntimeError(f"{type(net).__name__}.{name} was not called as a module in forward")
        feat = feat.double().reshape(-1, w64.shape[1])         # (N*J, C), sample-major
        if feat.shape[0] != n * j:
            raise RuntimeError(f"{type(net).__name__}.{name}: input has {feat.shape[0]} rows, expected {n * j}")
        y = y64.reshape(-1, 3)
        scaled = w64 * std64.mean(dim=0)[:, None]              # (3, C)
        f_mean, y_mean = feat.mean(dim=0), y.mean(dim=0)
        fc = feat - f_mean
        gram = fc.T @ fc
        ridge = RIDGE * torch.trace(gram) / gram.shape[0] + 1e-12
        rhs = fc.T @ (y - y_mean - fc @ scaled.T)              # (C, 3)
        delta = torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype, device=dev), rhs)
        new_w = scaled + delta.T
        new_bias = y_mean - f_mean @ new_w.T
    else:
        raise ValueError(f"{type(net).__name__}.{name}: {weight.shape[0]} outputs, expected 3 or 3 x {j}")
    weight.copy_(new_w.reshape(weight.shape).to(dt))
    bias.copy_(new_bias.to(bias.dtype))
    return net
