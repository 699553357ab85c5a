"""When pitrix certificates are renewed: plain date arithmetic, apart from ``pki`` so an agent
checking whether its certificate is due does not load the cryptography package (5 MiB of RSS in
a process that otherwise needs none of it until it makes a CSR)."""

from __future__ import annotations

import datetime as dt

# Clocks of VMs and pitrixd drift; a certificate valid from "now" would be refused by a peer
# a few seconds behind.
BACKDATE = dt.timedelta(minutes=5)
# A certificate is renewed this far into its life.
RENEW_AT = 2 / 3


def renewal_time(not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """When a certificate of ours is due for renewal: :data:`RENEW_AT` of its life, counted from
    its real issue time. ``not_before`` is backdated by :data:`BACKDATE` against clock drift, which
    would make a short-lived certificate look two-thirds spent from the start."""
    issued = min(not_before + BACKDATE, not_after)
    return issued + (not_after - issued) * RENEW_AT
