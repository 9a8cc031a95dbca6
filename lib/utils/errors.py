"""How the command-line programs end on bad input: one line on stderr, a non-zero exit, no traceback.

Library code raises :class:`UserError` (or a subclass) for anything the user can fix: a missing or
corrupt file, a wrong key or value. The message names the file, key or value and says what to do.
``run/*.py`` call :func:`run_cli`, which turns such errors (and the common built-in ones that carry a
file name) into that one line. ``L2D_DEBUG=1`` in the environment shows the full traceback instead.
"""
import os
import sys

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130          # the shell's convention for SIGINT


class UserError(Exception):
    """Bad input the user can fix; ``str(error)`` is the whole message (file/key/value + what to do)."""


def debug_enabled() -> bool:
    return os.environ.get("L2D_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())           # multi-line messages become one line for log scrapers


def run_cli(main, argv=None) -> int:
    """Run ``main(argv)`` as a command: bad input -> ``error: ...`` on stderr and exit 2, Ctrl-C -> 130.

    Only errors that describe bad input are shortened (UserError, missing/unreadable files); anything
    else is a bug and keeps its traceback. Returns the exit code (``sys.exit(run_cli(main))``).
    """
    try:
        main(argv)
        return 0
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UserError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        if debug_enabled():
            raise
        print(f"error: {_one_line(exc)} (set L2D_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_USER_ERROR
