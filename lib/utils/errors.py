"""How the command-line programs end on bad input: one line on stderr, a non-zero exit, no traceback.

Library code raises :class:`UserError` (or a subclass) for anything the user can fix: a missing or
corrupt file, a wrong key or value. The message names the file, key or value and says what to do.
``run/*.py`` call :func:`run_cli`, which turns such errors (and the common built-in ones that carry a
file name) into that one line. ``L2D_DEBUG=1`` in the environment shows the full traceback instead.
"""
import errno
import os
import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130          # the shell's convention for SIGINT


class UserError(Exception):
    """Bad input the user can fix; ``str(error)`` is the whole message (file/key/value + what to do)."""


class BadValueError(UserError, ValueError):
    """A value (flag, config entry, line of an input file) the code cannot use; still a ``ValueError``."""


class MissingKeyError(UserError, KeyError):
    """A key an input file (calibration, annotation) should hold is absent; still a ``KeyError``."""

    def __str__(self):                 # KeyError would quote the whole message
        return Exception.__str__(self)


class ConfigError(MissingKeyError):
    """A config file or override that cannot be merged (unknown key, syntax error, not YAML)."""


class CorruptFileError(UserError):
    """A file exists but is truncated or is not what it should be (checkpoint, npz, h5, image)."""


class UntrustedFileError(UserError):
    """Reading the file would execute code from it and the user has not named it as trusted."""


class DiskFullError(UserError, OSError):
    """Writing ran out of space; the message names the target and says the previous file is intact.

    Built as ``DiskFullError(errno.ENOSPC, message, filename)``; ``str()`` is the message alone.
    """

    def __str__(self):
        return self.strerror or Exception.__str__(self)


def debug_enabled() -> bool:
    return os.environ.get("L2D_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())           # multi-line messages become one line for log scrapers


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)`` as a command: bad input -> ``error: ...`` on stderr and exit 2, Ctrl-C -> 130.

    Only errors that describe bad input are shortened (UserError, missing/unreadable files); anything
    else is a bug and keeps its traceback. Returns the exit code (``sys.exit(run_cli(main))``).
    A PyTorch older than the code needs is such a line too, before ``main`` starts
    (:func:`lib.utils.versions.check_torch`).
    """
    from lib.utils.versions import check_torch
    try:
        check_torch()
        main(argv)
        return 0
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        # `raise SystemExit("error: ...")` in a CLI is bad input too: same line, same exit code
        if not isinstance(exc.code, str):
            raise
        text = _one_line(SystemExit(exc.code))
        print(text if text.startswith("error:") else f"error: {text}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (UserError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        if debug_enabled():
            raise
        print(f"error: {_one_line(exc)} (set L2D_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        # a full disk is the user's to fix; other OS errors are unexpected and keep their traceback
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or debug_enabled():
            raise
        target = f" writing {exc.filename}" if exc.filename else ""
        print(f"error: no space left on the device{target}; free space, then re-run (set L2D_DEBUG=1 for the "
              f"traceback)", file=sys.stderr)
        return EXIT_USER_ERROR
