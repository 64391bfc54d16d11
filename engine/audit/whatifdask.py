"""Run what-if shards on a Dask cluster (the ``dask`` extra: ``dask`` and ``distributed``).

``address`` is a scheduler (``tcp://host:8786``) or ``"local"``: a
:class:`distributed.LocalCluster` of ``workers`` single-threaded workers on this machine
(``processes=False``: threads in this process, which starts in a fraction of the time;
for tests). Each shard is one task (:func:`engine.audit.whatif.run_shard`); every worker
reads its shard from the log path itself, so on a cluster the logs sit on storage that
every worker mounts at the same path, and the engine is installed on every worker
(``docs/whatif.md``). Results are taken in shard order, each released as soon as it is
folded, so the scheduler never holds more than the results not yet folded.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import Any

from ..errors import UsageError
from .whatifshard import Shard

__all__ = ["dask_map"]


def _client(address: str, workers: int, processes: bool) -> tuple[Any, Any]:
    try:
        # typed as Any: distributed's API is not annotated (mypy --strict refuses its calls)
        dist: Any = importlib.import_module("distributed")
    except ImportError:
        raise UsageError("whatif.missing_extra", "--dask needs dask and distributed, which are not "
                         "installed; install the dask extra: pip install 'ctxbudget[dask]' (or run on "
                         "the process pool: --workers N)", path="$.dask") from None
    if address == "local":
        cluster = dist.LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                    dashboard_address=None)
        return dist.Client(cluster), cluster
    try:
        return dist.Client(address, timeout=30), None
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError("whatif.dask_unreachable", f"cannot reach the Dask scheduler at {address!r} "
                         f"({exc}); start one (`dask scheduler`), check the address, or use --dask local",
                         path="$.dask") from None


def dask_map(address: str, shards: Iterable[Shard], task: Any, *,
             workers: int = 1, processes: bool = True) -> Iterator[Any]:
    """(shard, result of :func:`~engine.audit.whatif.run_shard`) over ``shards``, in
    shard order, computed on the cluster at ``address`` (a few tasks per worker in
    flight: :func:`~engine.audit.whatif.windowed`)."""
    from .whatif import run_shard, windowed

    client, cluster = _client(address, workers, processes)
    try:
        shared = client.scatter(task, broadcast=True)
        window = 4 * max(workers, len(client.scheduler_info().get("workers", {})))

        def take(fut: Any) -> Any:
            value = fut.result()
            fut.release()
            return value

        yield from windowed(lambda s: client.submit(run_shard, s, shared, pure=False), take, shards, window)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
