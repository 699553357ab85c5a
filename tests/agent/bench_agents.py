"""Moved to bench/agent.py (``python -m bench.agent``), the home of benchmarks.

Kept only as the name bench/propagation.py imports for its light-mode table; new callers use
``bench.agent.light_mode_rows``.
"""

from bench.agent import light_mode_rows as bench

__all__ = ["bench"]
