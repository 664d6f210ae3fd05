"""The `lowbit` command line: convert, export, info, validate, bench, demo, auto, quant.

Results go to stdout; logs, progress bars and warnings (one line each) to stderr. Exit codes: 0 success, 1 runtime
error (one line `lowbit: error: ...` on stderr), 2 usage error (argparse), 130 interrupted, 141 stdout closed
(`lowbit ... | head`: nothing is printed about it).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from .. import __version__
from ..plugins import load_plugins
from . import auto, bench, convert, demo, export, info, quant, validate

_COMMANDS = (convert, export, info, validate, bench, demo, auto, quant)
# Errors that are the user's input or environment, reported as one line; anything else is a bug and keeps its trace.
_USER_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowbit", description="Compress PyTorch model weights to 2-8 bits and "
                                     "run them fast on CPU and GPU.")
    parser.add_argument("--version", action="version", version=f"lowbit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS:
        cmd.add_parser(sub)
    return parser


def error_line(exc: BaseException) -> str:
    """`lowbit: error: <message>` on one line."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return f"lowbit: error: {msg}"


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"lowbit: warning: {' '.join(str(message).split())}", file=sys.stderr)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not report the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests): nothing to flush
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default sys.argv[1:]); returns the exit code."""
    load_plugins()  # methods and formats registered by plug-ins are choices of every command (lowbit.plugins)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) and usage errors (2)
        return int(e.code or 0)
    try:
        with warnings.catch_warnings():  # restores the process's warning display on return
            warnings.showwarning = _warning_line
            code = int(args.run(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return code
    except BrokenPipeError:  # `lowbit ... | head`: the reader left; stop quietly as other command-line tools do
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe
    except KeyboardInterrupt:
        print("lowbit: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as e:
        print(error_line(e), file=sys.stderr)
        return 1
