"""Command-line interface: a thin layer over the Python API.

Every command module registers on the one typer ``app``. ``main`` turns
:class:`~flopgap.errors.FlopgapError` and usage errors into one line on stderr and an
exit code (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from flopgap.cli._app import app
from flopgap.cli import count as _count  # noqa: F401  (registers commands)
from flopgap.cli import study as _study  # noqa: F401
from flopgap.cli import variants as _variants  # noqa: F401
from flopgap.cli import time as _time  # noqa: F401
from flopgap.cli import machine as _machine  # noqa: F401
from flopgap.cli import explain as _explain  # noqa: F401
from flopgap._terminal import printable
from flopgap.cli import _interrupt
from flopgap.errors import FlopgapError, one_line

__all__ = ["app", "main"]

# typer vendors click in recent releases: find its exception bases through a public class
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _fail(message: str, code: int) -> None:
    """``error: <message>`` as one line on stderr (control characters shown as escapes), then exit."""
    print(f"error: {printable(message)}", file=sys.stderr)
    sys.exit(code)


def _store_error(e: BaseException) -> bool:
    """A database error from the results store (SQLAlchemy), without importing it."""
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(e, exc.SQLAlchemyError)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]
    # torch's deprecation chatter (torch.ao, jit) is not the user's business on a CLI
    warnings.filterwarnings("ignore", module=r"torch(\.|$)")
    _interrupt.reset()
    _interrupt.set_argv(args)
    try:
        rc = app(args=args, prog_name="flopgap", standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:  # click turns Ctrl-C at a prompt (and end of input) into Abort
        _fail(_interrupt.message(), 130)
    except _CLICK_ERROR as e:
        _fail(f"{e.format_message()} (see flopgap --help)", 2 if isinstance(e, _USAGE_ERROR) else e.exit_code)
    except FlopgapError as e:
        _fail(str(e), e.exit_code)
    except KeyboardInterrupt as e:
        _fail(_interrupt.message(e), 130)
    except Exception as e:  # a bug in flopgap: still one line, traceback on request
        if os.environ.get("FLOPGAP_DEBUG"):
            raise
        if _store_error(e):  # the database went away or refused a write mid-run
            _fail(f"the results store failed: {one_line(getattr(e, 'orig', None) or e)}", 2)
        _fail(f"internal error {one_line(e)} (set FLOPGAP_DEBUG=1 for the traceback)", 1)
    except BaseException as e:  # neither Exception nor Ctrl-C nor exit: a stray BaseException subclass
        if isinstance(e, (SystemExit, GeneratorExit)) or os.environ.get("FLOPGAP_DEBUG"):
            raise
        _fail(f"internal error {one_line(e)} (set FLOPGAP_DEBUG=1 for the traceback)", 1)
    sys.exit(rc if isinstance(rc, int) else 0)
