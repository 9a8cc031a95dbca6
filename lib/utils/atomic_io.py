"""Writing files so that a reader (or a crash) never sees half of one.

Both writers go through ``<path>.tmp`` in the same folder and ``os.replace``: a kill at any moment
leaves either the old file or the new one whole. :func:`atomic_save` (``torch.save``) also flushes
to disk and turns a full disk into one :class:`DiskFullError` naming the target.
"""
import errno
import os
from pathlib import Path

from lib.utils.errors import DiskFullError


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through ``<path>.tmp`` and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _WriteRecorder:
    """File wrapper that keeps the OSError of a failed write: torch turns it into a RuntimeError
    ("unexpected pos ...") that no longer says the disk is full."""

    def __init__(self, fh):
        self.fh, self.error = fh, None

    def write(self, data):
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name):
        return getattr(self.fh, name)


def _disk_full(err) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def atomic_save(obj, path) -> Path:
    """``torch.save(obj)`` to ``path`` through a temporary file and ``os.replace``.

    A full disk raises :class:`lib.utils.errors.DiskFullError` naming ``path``; the previous file
    at ``path`` is untouched (only the temporary file was being written, and it is removed).
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    recorder = None
    try:
        with open(tmp, "wb") as fh:
            recorder = _WriteRecorder(fh)
            torch.save(obj, recorder)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        cause = recorder.error if recorder is not None and recorder.error is not None else err
        if _disk_full(cause):
            kept = "the previous file is intact" if path.exists() else "nothing was written"
            raise DiskFullError(errno.ENOSPC, f"no space left on the device while writing {path}; {kept}. "
                                f"Free space (or point OUTPUT_DIR elsewhere), then re-run (--resume for a "
                                f"training run)", str(path)) from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
