"""pitrix's benchmarks: figures for speed and scale, printed as tables and kept in docs/benchmarks.md.

Run ``python -m bench [--quick] [names...]``. A benchmark is a module of this package with a
``TITLE`` and ``async def run(quick: bool) -> list[Table]``; a module that only has a ``main()``
(a script of its own) is run as ``python -m bench.<name> [--quick]`` and its output kept verbatim,
so benchmarks written by other parts join the report without changes here.
"""

import os

# Every benchmark process imports gRPC (aetcd, through pitrix.store) and then forks: the runner its
# scripts, the benches etcd, metad, pitrixd, agents and the in-process simulator's VM processes.
# gRPC's fork handlers, run in a process whose gRPC threads are live, may deadlock the child or log a
# line per fork; no child here uses the parent's gRPC state (each execs at once), so they are off. It
# is read when gRPC loads, which is why it is set here, before any benchmark module imports it; the
# children inherit it, so pitrixd (embedded etcd) and metad do the same.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
