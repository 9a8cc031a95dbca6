"""Reading files other people made without running their code, and saying clearly when a file is bad.

* :func:`load_pickle` reads the original project's pickles (``annot.pkl``, ``<dataset>_stats.pkl``)
  with an unpickler that only rebuilds containers and numpy arrays. A pickle that refers to any
  other function or class (the way a pickle runs code) is refused, unless the user named that
  file (or a folder above it) as trusted: ``TRUSTED_FILES`` in the config or ``--trust PATH``.
* :func:`torch_load` is ``torch.load(weights_only=True)`` (plus numpy arrays, scalars and RNG states,
  which official lifter files carry) whose errors name the file: truncated or not a checkpoint at
  all, or holding Python objects that would need code to rebuild.
* :func:`load_npz` reads a prepared ``*.npz`` with ``allow_pickle=False``; a truncated one is named
  with the command that rebuilds it. :func:`load_npz_plain` reads an ``*.npz`` whose arrays may hold
  pickled objects (VideoPose3D's dictionaries) with the same plain-data unpickler.
* :func:`jpeg_is_complete` / :func:`read_image` catch the JPEG that lost its tail: OpenCV decodes it
  without an error and fills the missing part grey.
"""
import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Tuple

import numpy as np

from lib.utils.errors import BadValueError, CorruptFileError, UntrustedFileError

# torch's own format: a zip archive (since 1.6) or the legacy pickle stream starting with this magic number
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_JPEG_TAIL_SCAN = 4096          # bytes searched for the end marker (some cameras append padding or metadata)


def trust_hint(path) -> str:
    return (f"if you trust {path}, name it (or a folder above it) with --trust {path} or the config key "
            f"TRUSTED_FILES ['{path}']")


def is_trusted(path, trusted: Optional[Iterable] = None) -> bool:
    """True when ``path`` is, or lies under, one of the ``trusted`` paths (resolved, symlinks followed)."""
    if not trusted:
        return False
    target = Path(path).resolve()
    for entry in trusted:
        if not str(entry).strip():
            continue
        base = Path(entry).expanduser().resolve()
        if target == base or base in target.parents:
            return True
    return False


# ---------------------------------------------------------------------------------------------- pickle
_NUMPY_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("collections", "OrderedDict"),
}


class _PlainDataUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, numbers, strings and numpy arrays; any other global is refused."""

    def __init__(self, fh, source):
        super().__init__(fh)
        self.source = source

    def find_class(self, module, name):
        if (module, name) in _NUMPY_GLOBALS or (module == "numpy.dtypes" and name.endswith("DType")):
            return super().find_class(module, name)
        raise UntrustedFileError(
            f"{self.source}: the pickle refers to {module}.{name}, which would run code from the file; "
            f"it was not loaded. Only plain data (dicts, lists, numbers, numpy arrays) is read by default; "
            f"{trust_hint(self.source)}")


def load_pickle(path, trusted: Optional[Iterable] = None):
    """Plain data from a pickle file; a file named in ``trusted`` is read with :mod:`pickle` itself."""
    path = Path(path)
    with open(path, "rb") as fh:
        try:
            if is_trusted(path, trusted):
                return pickle.load(fh)        # the user named this file: full pickle, code included
            return _PlainDataUnpickler(fh, path).load()
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError) as err:
            raise CorruptFileError(f"{path}: not a readable pickle or truncated ({type(err).__name__}: "
                                   f"{_first_line(err)}); re-download or re-create it") from err


# ---------------------------------------------------------------------------------------------- torch
def numpy_safe_globals() -> list:
    """numpy arrays, scalars, dtypes and RNG states: plain data that official checkpoints pickle."""
    import numpy.random as npr
    core = getattr(np, "_core", None) or getattr(np, "core")
    allowed = [np.ndarray, np.dtype, core.multiarray._reconstruct, core.multiarray.scalar]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    pickle_mod = getattr(npr, "_pickle", None)
    for name in ("__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor"):
        if pickle_mod is not None and hasattr(pickle_mod, name):
            allowed.append(getattr(pickle_mod, name))
    allowed += [npr.RandomState, npr.MT19937, npr.PCG64, npr.Generator]
    return allowed


def _first_line(err) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def looks_like_torch_file(path) -> bool:
    """A complete zip archive or the legacy torch pickle stream (cheap: the header and central directory)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            return True
        with open(path, "rb") as fh:
            return fh.read(len(_LEGACY_TORCH_MAGIC)) == _LEGACY_TORCH_MAGIC
    except OSError:
        return False


def not_a_checkpoint_message(path) -> str:
    return f"not a PyTorch checkpoint or truncated: {path}; re-download or re-create it"


def torch_load(path, *, what: str = "checkpoint", map_location="cpu", trusted: Optional[Iterable] = None):
    """``torch.load(path, weights_only=True)`` with numpy data allowed; errors name the file and the fix.

    A file named in ``trusted`` is loaded with ``weights_only=False`` (its code may run: the user said so).
    """
    import torch
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    full = is_trusted(path, trusted)
    try:
        if full:
            return torch.load(path, map_location=map_location, weights_only=False)
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if not full and looks_like_torch_file(path):
            raise UntrustedFileError(
                f"{path}: this {what} stores Python objects besides tensors and numpy data "
                f"({_first_line_of_unsupported(err)}); rebuilding them would run code from the file, so it was "
                f"not loaded. Re-save only the weights (torch.save(model.state_dict(), FILE)) in a session you "
                f"trust, or {trust_hint(path)}") from None
        raise CorruptFileError(not_a_checkpoint_message(path)) from err
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
        # a complete archive failing for another reason (e.g. mapping to a missing device) keeps torch's
        # message; I/O errors (OSError: permissions, a vanished disk) are not caught at all
        if isinstance(err, RuntimeError) and "PytorchStreamReader" not in str(err) and looks_like_torch_file(path):
            raise
        raise CorruptFileError(not_a_checkpoint_message(path)) from err


def _first_line_of_unsupported(err) -> str:
    # torch's message is long; the line naming the refused global is the useful one
    for line in str(err).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.strip().split(" was not")[0][:200]
    return "objects torch refuses to rebuild"


# ---------------------------------------------------------------------------------------------- json
def load_json(path):
    """``json.load`` whose syntax errors name the file, line and column."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise BadValueError(f"{path} line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); the file "
                            f"may be truncated: re-download or re-create it") from None
    except UnicodeDecodeError as err:
        raise BadValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); expected JSON") from None


# ---------------------------------------------------------------------------------------------- npz
def load_npz(path, rebuild_hint: str = "") -> dict:
    """Every array of an ``.npz`` (``allow_pickle=False``); a truncated/corrupt file is named with the fix."""
    path = Path(path)
    fix = rebuild_hint or "re-run the preparation (run/prepare_h36m.py or run/prepare_panoptic.py) with --force"
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise CorruptFileError(f"{path} is truncated or not an npz archive ({type(err).__name__}: "
                               f"{_first_line(err)}); {fix}") from err


def _npy_header(fh):
    """(shape, fortran order, dtype) of the ``.npy`` stream ``fh``, positioned after its header."""
    version = np.lib.format.read_magic(fh)
    reader = getattr(np.lib.format, "_read_array_header", None)
    if reader is not None:
        return reader(fh, version)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(fh)


def load_npz_plain(path, trusted: Optional[Iterable] = None, fix: str = "re-create it") -> dict:
    """Every array of an ``.npz``; an array of Python objects (``np.savez`` of a dict or list, as
    VideoPose3D's files hold) is rebuilt by the plain-data unpickler of :func:`load_pickle`, so a file
    carrying code is refused (:class:`UntrustedFileError`) unless named in ``trusted``. ``fix`` ends the
    message of a truncated or foreign file."""
    path = Path(path)
    full = is_trusted(path, trusted)
    out = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                key = member[:-4] if member.endswith(".npy") else member
                fh = io.BytesIO(archive.read(member))
                _shape, _fortran, dtype = _npy_header(fh)
                if dtype.hasobject:     # the pickle follows the header
                    out[key] = pickle.load(fh) if full else _PlainDataUnpickler(fh, path).load()
                else:
                    fh.seek(0)
                    out[key] = np.lib.format.read_array(fh, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, ValueError, KeyError, pickle.UnpicklingError, TypeError, IndexError) as err:
        raise CorruptFileError(f"{path} is truncated or not an npz archive ({type(err).__name__}: "
                               f"{_first_line(err)}); {fix}") from err
    return out


# ---------------------------------------------------------------------------------------------- images
def jpeg_is_complete(data: bytes) -> bool:
    """False for a JPEG whose end-of-image marker is missing (cut short); True for complete JPEGs and
    for anything that is not a JPEG (those are left to the decoder)."""
    if not data.startswith(_JPEG_SOI):
        return True
    return _JPEG_EOI in data[-_JPEG_TAIL_SCAN:]


def read_image(path, flags=None) -> Tuple[Optional[np.ndarray], str]:
    """-> (BGR uint8 image, '') or (None, why): missing, unreadable, or a JPEG cut short."""
    import cv2
    if flags is None:
        flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return None, f"unreadable ({err.strerror or type(err).__name__})"
    if not jpeg_is_complete(data):
        return None, "truncated JPEG (no end-of-image marker)"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        return None, "not a decodable image"
    return image, ""
