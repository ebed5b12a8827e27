"""Error types for bad user input and for a run that cannot go on, and the wrapper
that turns them into one line."""
from __future__ import annotations

import contextlib
import errno
import logging
import signal
import sys
import warnings
from typing import Callable

# loggers of the running script (``stembb.runlog.start_run``): a fatal error is written
# to their files too, so a failed run's log ends with it
RUN_LOGS: list[logging.Logger] = []


class InputError(Exception):
    """Bad input (file, row or flag): the message is the whole story, one line."""


class UnpairableLetterWarning(UserWarning):
    """A sequence given to the API holds letters outside ACGTU, which fold unpaired. The
    scripts (``run_main``) leave it out: they note such records once, as they read them."""


class RunFailed(Exception):
    """The run cannot go on through no fault of the input (e.g. a worker process died):
    the message says what happened and what to do, one line."""


def _fail(message: str, status: int) -> None:
    print(message, file=sys.stderr)
    for log in RUN_LOGS:
        for handler in log.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.stream.write(message + "\n")
                handler.flush()
    sys.exit(status)


# what a full disk, a quota or a read-only mount answers a write
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO})

_RECEIVED: list[int] = []  # the terminating signal run_main's handler took, if any


def _terminated(signum, frame):
    _RECEIVED.append(signum)
    raise KeyboardInterrupt  # unwinds like Ctrl-C: temporary files are removed on the way


@contextlib.contextmanager
def signals_held():
    """Ctrl-C and SIGTERM wait until the block ends: a file created inside it is known
    (assigned) before either can unwind the run, so the handler that removes it sees it."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def loader_worker_start(_worker_id=None) -> None:
    """A data-loader worker's ``worker_init_fn``. SIGTERM is left to the main process,
    which stops its workers as it unwinds: workers fork with ``run_main``'s handler, and a
    scheduler's SIGTERM to the whole process group would otherwise end each with a
    traceback, and the main process with another for the dead worker. And a connection
    the main process drops while it fetches a batch's shared memory from this worker (it
    ended mid-transfer: Ctrl-C, SIGTERM) is not reported: multiprocessing's fd-sharing
    thread would print that reset as a traceback after the run's one-line message."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    report = sys.excepthook

    def excepthook(kind, value, traceback):
        if not issubclass(kind, (ConnectionResetError, BrokenPipeError, EOFError)):
            report(kind, value, traceback)

    sys.excepthook = excepthook


def pool_worker_start() -> None:
    """A process-pool worker's ``initializer``: SIGTERM ends it at once. When one worker
    dies, the pool stops the others with SIGTERM and waits for them; with ``run_main``'s
    handler, inherited by the fork, a worker busy with a task would take the signal as an
    exception of that task, report it and wait for the next one, so the run would hang
    instead of stopping with its one-line error."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_main(main: Callable[[], None]) -> None:
    """Run a script's ``main``: bad input exits 2, a non-finite loss or ``RunFailed`` 1, each with a
    one-line message (also at the end of the run's log file), as does a write refused for
    room or a read-only mount (``WRITE_ERRNOS``); Ctrl-C exits 130 and SIGTERM
    143 (128 + the signal, which schedulers read to tell a time limit from a Ctrl-C),
    after partial outputs are removed."""
    signal.signal(signal.SIGTERM, _terminated)
    warnings.simplefilter("ignore", UnpairableLetterWarning)
    try:
        main()
    except InputError as exc:
        _fail(f"error: {exc}", 2)
    except (FloatingPointError, RunFailed) as exc:  # e.g. a non-finite training loss
        _fail(f"error: {exc}", 1)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        _fail(f"error: could not write {exc.filename or 'an output'} ({exc.strerror}); "
              "outputs finished before are kept", 1)
    except KeyboardInterrupt as exc:  # a script may say what it kept (``KeyboardInterrupt(message)``)
        _fail(str(exc) or "interrupted: outputs written so far are complete; partial files were removed",
              128 + (_RECEIVED[0] if _RECEIVED else signal.SIGINT))
