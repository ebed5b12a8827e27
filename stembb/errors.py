"""One error type for bad user input, and the wrapper that turns it into one line."""
from __future__ import annotations

import sys
from typing import Callable


class InputError(Exception):
    """Bad input (file, row or flag): the message is the whole story, one line."""


def run_main(main: Callable[[], None]) -> None:
    """Run a script's ``main``: bad input exits 2 and a non-finite loss 1, each with a
    one-line message; Ctrl-C exits 130."""
    try:
        main()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as exc:  # a non-finite training loss stops the run
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: outputs written so far are complete; partial files were removed",
              file=sys.stderr)
        sys.exit(130)
