"""Work beyond one process, shared by the data generators and ``stembb-fold``: the
``--shard K/N`` and ``--dask ADDRESS|local:N`` flags, checked, and a Dask client of a
running scheduler or of a LocalCluster (``dask_client``)."""
from __future__ import annotations

import re
import threading

from stembb.errors import InputError

DASK_ADDRESS = re.compile(r"(?:(?:tcp|tls|ucx)://)?[\w.-]+:\d+")  # a scheduler: [protocol://]host:port
DASK_CONNECT_SECONDS = 15


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """``--shard K/N`` -> ``(K, N)`` with 0 <= K < N; one-line InputError otherwise."""
    if value is None:
        return None
    try:
        k, n = (int(v) for v in value.split("/"))
    except ValueError:
        raise InputError(f"--shard must be K/N (e.g. 0/4), got {value!r}") from None
    if not 0 <= k < n:
        raise InputError(f"--shard K/N needs 0 <= K < N, got {value!r}")
    return k, n


def check_dask(value: str | None) -> None:
    """One-line InputError for a ``--dask`` that is neither ``local:N`` (N >= 1) nor a
    scheduler address."""
    if value is None:
        return
    if value.startswith("local:"):
        n = value[len("local:"):]
        if not (n.isdigit() and int(n) >= 1):
            raise InputError(f"--dask local:N needs a number of processes N >= 1, got {value!r}")
    elif not DASK_ADDRESS.fullmatch(value):
        raise InputError(f"--dask {value!r}: expected a scheduler address such as tcp://host:8786, or local:N")


def dask_client(value: str):
    """``(client, cluster)`` for ``--dask``: a LocalCluster of N one-thread processes
    (``local:N``; ``cluster`` to close after the client), or the scheduler at an address
    (``cluster`` None)."""
    from dask.distributed import Client, LocalCluster
    if value.startswith("local:"):
        cluster = LocalCluster(n_workers=int(value.split(":", 1)[1]), threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster
    return _connect(Client, value), None


def _connect(client_class, address: str):
    """A Dask client of the scheduler at ``address``, or a one-line InputError when none
    answers within ``DASK_CONNECT_SECONDS``: refused, unreachable, or a service that
    accepts and never speaks Dask (the client's own timeout does not cover that one, so
    the connection is made on a daemon thread that the run does not wait for)."""
    outcome: list = []

    def connect():
        try:
            outcome.append(client_class(address, timeout=DASK_CONNECT_SECONDS))
        except Exception as exc:  # whatever the connection raised is reported below
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(DASK_CONNECT_SECONDS + 5)
    if not outcome or isinstance(outcome[0], Exception):
        why = type(outcome[0]).__name__ if outcome else "no answer"
        raise InputError(f"--dask {address}: no Dask scheduler answered within {DASK_CONNECT_SECONDS} s ({why})")
    return outcome[0]
