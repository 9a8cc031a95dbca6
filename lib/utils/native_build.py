"""Building one of the project's C sources into a shared library for this machine, on first use.

The library is compiled with the system C compiler (``$CC``, e.g. ``gcc`` or ``ccache clang``, else
``cc``) for the CPU it runs on (``-O3 -march=native``, OpenMP when the compiler has it) and cached
under ``$L2D_NATIVE_CACHE`` (default ``~/.cache/l2d_pose/native``), named by a hash of the source,
the compiler, its flags and the CPU, so an edited source, another compiler or another CPU (a home
directory shared across machines) gets its own build. Builds go to a temporary file that is then renamed into place:
processes building at once (torchrun ranks) never load half a file.

No compiler, a failed build or ``L2D_NATIVE=0`` gives ``None``, and callers keep their torch code;
the first failure says so in one warning. Only sources shipped in this repository are built.
"""
import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Dict, Optional

# Tried in order: the fastest build first, then one any C compiler takes (no OpenMP: one thread).
FLAG_SETS = (["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared"], ["-O2", "-fPIC", "-shared"])
DISABLE_ENV = "L2D_NATIVE"
CACHE_ENV = "L2D_NATIVE_CACHE"

_lock = threading.Lock()
_loaded: Dict[str, Optional[ctypes.CDLL]] = {}
_warned = set()


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "l2d_pose" / "native"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags (Linux), else the platform."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor() + platform.machine()


def _compiler_version(cc: str) -> str:
    try:
        return subprocess.run([*shlex.split(cc), "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _build(source: Path, cc: str, target_dir: Path) -> Path:
    """Compile ``source`` with the first flag set that works; -> the cached library's path
    (RuntimeError, naming the compiler's first error line, when no flag set builds)."""
    text = source.read_bytes()
    version, cpu = _compiler_version(cc), _cpu_signature()
    errors = []
    for flags in FLAG_SETS:
        key = hashlib.sha256(b"\0".join([text, cc.encode(), " ".join(flags).encode(), version.encode(),
                                         cpu.encode()])).hexdigest()[:16]
        target = target_dir / f"{source.stem}-{key}.so"
        if target.exists():
            return target
        target_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{source.stem}-", suffix=".so", dir=target_dir)
        os.close(fd)
        try:
            run = subprocess.run([*shlex.split(cc), *flags, str(source), "-o", tmp, "-lm"], capture_output=True,
                                 text=True, timeout=300)
            if run.returncode == 0:
                os.replace(tmp, target)
                return target
            lines = run.stderr.strip().splitlines()
            errors.append(next((ln for ln in lines if "error" in ln), lines[-1] if lines else f"exit {run.returncode}"))
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(str(exc))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    raise RuntimeError(f"{cc} could not build {source.name}: {errors[0].strip()}")


def load_native(source: Path) -> Optional[ctypes.CDLL]:
    """The shared library built from ``source`` (a path in this repository), or None (module docstring).

    Built and loaded once per process; call after ``import torch`` so that an OpenMP build shares
    torch's OpenMP runtime instead of starting a second one."""
    source = Path(source).resolve()
    name = str(source)
    with _lock:
        if name in _loaded:
            return _loaded[name]
        lib = None
        if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
            _loaded[name] = None
            return None
        cc = os.environ.get("CC") or "cc"
        if not cc.strip() or shutil.which(shlex.split(cc)[0]) is None:
            _warn_once("no-cc", f"no C compiler ({cc!r}) found: {source.name} runs as torch operations instead "
                                f"(slower on CPUs; set {DISABLE_ENV}=0 to silence this)")
        else:
            try:
                lib = ctypes.CDLL(str(_build(source, cc, cache_dir())))
            except (OSError, RuntimeError) as exc:
                _warn_once(f"build-{name}", f"{exc}; {source.name} runs as torch operations instead "
                                            f"(set {DISABLE_ENV}=0 to silence this)")
        _loaded[name] = lib
        return lib
