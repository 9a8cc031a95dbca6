"""Writing a small text file so that a reader (or a crash) never sees half of it."""
import os
from pathlib import Path


def write_text_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through ``<path>.tmp`` and ``os.replace``: a kill at any moment
    leaves either the old file or the new one whole."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
