"""The largest etcd transaction pitrixd writes, for the start-up check of an external etcd.

A scale-in marks all its leavers in one fenced write (so a crash never leaves some marked and
others not), and a role may hold as many nodes as the app spec allows: that write is the largest.
The fence's comparisons are a part of their own, which etcd counts separately.
"""

from __future__ import annotations

from annotated_types import Le

from pitrix.runtime.spec import Role


def largest_transaction() -> int:
    """Operations in pitrixd's largest transaction part: one per node of the largest role."""
    bounds = [
        m.le for m in Role.model_fields["count"].metadata if isinstance(m, Le) and isinstance(m.le, int)
    ]
    return max(bounds, default=1000)
