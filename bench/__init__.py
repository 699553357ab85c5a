"""pitrix's benchmarks: figures for speed and scale, printed as tables and kept in docs/benchmarks.md.

Run ``python -m bench [--quick] [names...]``. A benchmark is a module of this package with a
``TITLE`` and ``async def run(quick: bool) -> list[Table]``; a module that only has a ``main()``
(a script of its own) is run as ``python -m bench.<name> [--quick]`` and its output kept verbatim,
so benchmarks written by other parts join the report without changes here.
"""
