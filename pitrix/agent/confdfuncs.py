"""confd's functions over a render's context, bound per render: the key space (memkv's ``getv``,
``gets``, ``ls``, ``lsdir``...), the environment (``getenv``), the VM's root (``fileExists``) and DNS
(``lookupIP``, ``lookupSRV``).

The engine (``pitrix.gotemplate``) knows these by name only (``CONFD_BOUND``); the agent binds them
to each render's values and passes them to ``Template.execute``, so a parsed template is never
re-bound and can stay cached across rounds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pitrix.agent.memkv import MemKV
from pitrix.gotemplate import CONFD_FUNCS, KVPair, KVPairs
from pitrix.gotemplate.confd import str_arg

if TYPE_CHECKING:
    from pitrix.agent.netlookup import SRV

__all__ = ["BoundFuncs", "bound_funcs", "confd_funcs"]


class BoundFuncs:
    """The functions that need context: the key space, the environment, the filesystem root, DNS."""

    def __init__(
        self,
        kv: MemKV,
        *,
        root: str | None = None,
        environ: Mapping[str, str] | None = None,
        nameservers: list[tuple[str, int]] | None = None,
    ) -> None:
        self.kv = kv
        self.root = root
        self.environ = environ
        self.nameservers = nameservers

    def getv(self, key: Any, *default: Any) -> str:
        return self.kv.get_value(str_arg(key), *[str_arg(d) for d in default])

    def getvs(self, pattern: Any) -> list[str]:
        return self.kv.get_all_values(str_arg(pattern))

    def get(self, key: Any) -> KVPair:
        return self.kv.get(str_arg(key))

    def gets(self, pattern: Any) -> KVPairs:
        return self.kv.get_all(str_arg(pattern))

    def exists(self, key: Any) -> bool:
        return self.kv.exists(str_arg(key))

    def ls(self, path: Any) -> list[str]:
        return self.kv.ls(str_arg(path))

    def lsdir(self, path: Any) -> list[str]:
        return self.kv.lsdir(str_arg(path))

    def getenv(self, key: Any, *default: Any) -> str:
        env = self.environ if self.environ is not None else os.environ
        value = env.get(str_arg(key), "")
        if value == "" and default:
            return str_arg(default[0])
        return value

    def file_exists(self, path: Any) -> bool:
        target = str_arg(path)
        if self.root is not None:
            target = os.path.join(self.root, target.lstrip("/"))
        try:
            os.stat(target)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True
        return True

    # The resolver (``netlookup``) is loaded by the first template that asks it: most never do.

    def lookup_ip(self, host: Any) -> list[str]:
        from pitrix.agent.netlookup import lookup_ip

        return lookup_ip(str_arg(host))

    def lookup_ipv4(self, host: Any) -> list[str]:
        return [a for a in self.lookup_ip(host) if "." in a]

    def lookup_ipv6(self, host: Any) -> list[str]:
        return [a for a in self.lookup_ip(host) if ":" in a]

    def lookup_srv(self, service: Any, proto: Any, name: Any) -> list[SRV]:
        from pitrix.agent.netlookup import lookup_srv

        return lookup_srv(str_arg(service), str_arg(proto), str_arg(name), self.nameservers)

    def as_map(self) -> dict[str, Callable[..., Any]]:
        """By the names templates call them (exactly ``CONFD_BOUND``)."""
        return {
            "getv": self.getv,
            "getvs": self.getvs,
            "get": self.get,
            "gets": self.gets,
            "exists": self.exists,
            "ls": self.ls,
            "lsdir": self.lsdir,
            "getenv": self.getenv,
            "fileExists": self.file_exists,
            "lookupIP": self.lookup_ip,
            "lookupIPV4": self.lookup_ipv4,
            "lookupIPV6": self.lookup_ipv6,
            "lookupSRV": self.lookup_srv,
        }


def yunify_getv(kv: MemKV) -> Callable[..., str]:
    """confd-yunify's ``getv``: its memkv gives the default only when it is not empty, so
    ``getv KEY ""`` on a missing key stops the render as ``getv KEY`` does (kelseyhightower's
    confd, which the default mode matches, renders the empty default)."""

    def getv(key: Any, *default: Any) -> str:
        first = [str_arg(d) for d in default[:1]]
        return kv.get_value(str_arg(key), *[d for d in first if d])

    return getv


def bound_funcs(
    kv: MemKV,
    *,
    root: str | None = None,
    environ: Mapping[str, str] | None = None,
    nameservers: list[tuple[str, int]] | None = None,
) -> dict[str, Callable[..., Any]]:
    """One render's functions for ``Template.execute(funcs=...)`` of a ``parse_confd`` template.

    ``root``: directory ``fileExists`` resolves absolute paths under (a VM's root); ``environ``:
    what ``getenv`` reads (default ``os.environ``); ``nameservers``: where ``lookupSRV`` asks
    (default: /etc/resolv.conf's).
    """
    return BoundFuncs(kv, root=root, environ=environ, nameservers=nameservers).as_map()


def confd_funcs(
    kv: MemKV,
    *,
    root: str | None = None,
    environ: Mapping[str, str] | None = None,
    nameservers: list[tuple[str, int]] | None = None,
) -> dict[str, Callable[..., Any]]:
    """confd's whole function map over ``kv``, for a template parsed for one key space only
    (``parse(text, name, confd_funcs(kv))``): tools and tests. The agent's renders use
    ``parse_confd`` once and ``bound_funcs`` per render instead."""
    return {**CONFD_FUNCS, **bound_funcs(kv, root=root, environ=environ, nameservers=nameservers)}
