"""The oldest PyTorch the code runs on, checked once when a command starts (docs/scaling.md#gpu-notes).

``make install`` keeps a PyTorch that is already installed (a CUDA build, say), so an old one can
stay. The newest API the code needs decides the minimum:

* ``torch.serialization.safe_globals`` (a context manager, new in torch 2.5): every checkpoint,
  lifter and pretrained-weight load (:func:`lib.utils.safe_io.torch_load`);
* ``torch.amp.GradScaler(device)`` (new in torch 2.3): ``TRAIN.AMP fp16``.

On an older torch the first of those raises an ``AttributeError`` deep inside a run; every command
(:func:`lib.utils.errors.run_cli`) checks first and stops with one line instead.
"""
import re
import sys
from typing import Optional, Tuple

from lib.utils.errors import UserError

MIN_TORCH = (2, 5)
MIN_TORCH_TEXT = ".".join(map(str, MIN_TORCH))


class TorchVersionError(UserError):
    """The installed PyTorch is older than :data:`MIN_TORCH` (or missing)."""


def parse_version(text: str) -> Tuple[int, ...]:
    """``'2.13.0+cpu'`` -> (2, 13, 0); ``'2.5.0a0+git1234'`` -> (2, 5, 0): the leading numbers only."""
    m = re.match(r"^\s*(\d+(?:\.\d+)*)", str(text))
    if not m:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in m.group(1).split("."))


def check_torch(version: Optional[str] = None) -> str:
    """Raise :class:`TorchVersionError` (one line: the installed version and what to do) unless the
    installed torch (or ``version``) is at least :data:`MIN_TORCH`. -> the version checked."""
    if version is None:
        try:
            import torch
        except ImportError:
            raise TorchVersionError(f"PyTorch is not installed: run `make install` (a CPU build), or install a "
                                    f"build for your CUDA version, torch>={MIN_TORCH_TEXT}") from None
        version = str(torch.__version__)
    try:
        ok = parse_version(version)[:2] >= MIN_TORCH
    except ValueError:
        ok = True                       # an unreadable version string: let the code itself decide
    if not ok:
        raise TorchVersionError(
            f"PyTorch {version} is installed, but L2D-Pose needs torch>={MIN_TORCH_TEXT} "
            f"(torch.serialization.safe_globals, used by every checkpoint load): upgrade it, e.g. "
            f"`pip install --upgrade 'torch>={MIN_TORCH_TEXT}'`, or the command for your CUDA version from "
            f"pytorch.org (`make install` keeps the torch it finds)")
    return version


def main() -> int:
    """``python -m lib.utils.versions``: the check as a command (``make install`` runs it). -> exit code."""
    try:
        check_torch()
    except TorchVersionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
