"""One error type for bad user input, and the wrapper that turns it into one line."""
from __future__ import annotations

import logging
import signal
import sys
from typing import Callable

# loggers of the running script (``stembb.runlog.start_run``): a fatal error is written
# to their files too, so a failed run's log ends with it
RUN_LOGS: list[logging.Logger] = []


class InputError(Exception):
    """Bad input (file, row or flag): the message is the whole story, one line."""


def _fail(message: str, status: int) -> None:
    print(message, file=sys.stderr)
    for log in RUN_LOGS:
        for handler in log.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.stream.write(message + "\n")
                handler.flush()
    sys.exit(status)


def _terminated(signum, frame):
    raise KeyboardInterrupt  # unwinds like Ctrl-C: temporary files are removed on the way


def run_main(main: Callable[[], None]) -> None:
    """Run a script's ``main``: bad input exits 2 and a non-finite loss 1, each with a
    one-line message (also at the end of the run's log file); Ctrl-C and SIGTERM exit 130
    after partial outputs are removed."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        main()
    except InputError as exc:
        _fail(f"error: {exc}", 2)
    except FloatingPointError as exc:  # a non-finite training loss stops the run
        _fail(f"error: {exc}", 1)
    except KeyboardInterrupt:
        _fail("interrupted: outputs written so far are complete; partial files were removed", 130)
