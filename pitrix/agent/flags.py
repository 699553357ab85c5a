"""confd's command line as pitrix-agent reads it: every confd flag, its help line, and which ones
name a backend pitrix-agent does not have.

confd's scripts and unit files pass flags for backends they do not use (a ``-table`` left in a
template, ``-auth-type`` for a vault setup); confd ignores those. pitrix-agent accepts each flag
confd has, gives it confd's meaning where pitrix has the backend that reads it, and refuses with a
message naming the flag and its backend where pitrix has none, so a command line never fails on
"unrecognized arguments" and never silently drops a setting someone relies on.

Standard library only: the agent starts on every VM, often.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitrix.agent.errors import ConfigError

if TYPE_CHECKING:
    import argparse
    import types


class Flag:
    """One confd flag: Go's type name (``""`` for a boolean), its default as ``-help`` prints it,
    confd's description, and, for a flag only one of pitrix's missing backends reads, that backend.

    A plain slotted class, not a ``NamedTuple``: building one of those costs every start of the
    agent a generated class."""

    __slots__ = ("default", "help", "kind", "missing_backend")

    def __init__(self, kind: str, default: str, help: str, missing_backend: str = "") -> None:
        self.kind = kind
        self.default = default
        self.help = help
        self.missing_backend = missing_backend


# confd's flags (kelseyhightower/confd and yunify/confd). Defaults are pitrix-agent's where they
# differ from confd's (backend, config-file), said in docs/confd-compat.md.
FLAGS: dict[str, Flag] = {
    "app-id": Flag("string", "", "Vault app-id to use with the app-id backend", "vault"),
    "auth-token": Flag("string", "", "Auth bearer token to use", "vault"),
    "auth-type": Flag("string", "", "Vault auth backend type to use", "vault"),
    "backend": Flag("string", '"metad"', "backend to use (metad, etcd, etcdv3, redis, zookeeper, file, env)"),
    "basic-auth": Flag(
        "", "", "Use Basic Auth to authenticate (the etcdv3 backend uses -username whenever given)"
    ),
    "client-ca-keys": Flag("string", "", "client ca keys (metad backend)"),
    "client-cert": Flag("string", "", "the client cert (metad backend)"),
    "client-insecure": Flag(
        "", "", "Allow connections to SSL sites without certs (only used with -backend=etcd)"
    ),
    "client-key": Flag("string", "", "the client key (metad backend)"),
    "confdir": Flag("string", '"/etc/confd"', "confd conf directory"),
    "config-file": Flag("string", '"/etc/pitrix/agent.toml"', "the confd config file"),
    "file": Flag("value", "", "the YAML file to watch for changes (only used with -backend=file)"),
    "filter": Flag("string", '"*"', "files filter (only used with -backend=file)"),
    "interval": Flag("int", "600", "backend polling interval"),
    "keep-stage-file": Flag("", "", "keep staged files"),
    "log-level": Flag("string", '"info"', "level which confd should log messages"),
    "node": Flag("value", "", "list of backend nodes"),
    "noop": Flag("", "", "only show pending changes"),
    "onetime": Flag("", "", "run once and exit"),
    "password": Flag("string", "", "the password to authenticate with (etcdv3 and redis backends)"),
    "path": Flag("string", "", "Vault mount path of the auth method", "vault"),
    "prefix": Flag("string", "", "key path prefix (metad backend: /self)"),
    "role-id": Flag("string", "", "Vault role-id to use with the AppRole, Kubernetes backends", "vault"),
    "scheme": Flag(
        "string", '"http"', "the backend URI scheme for nodes retrieved from DNS SRV records (http or https)"
    ),
    "secret-id": Flag("string", "", "Vault secret-id to use with the AppRole backend", "vault"),
    "separator": Flag(
        "string",
        "",
        "the separator to replace '/' with when looking up keys in the backend, prefixed '/' will also"
        " be removed (only used with -backend=redis)",
    ),
    "srv-domain": Flag("string", "", "the name of the resource record"),
    "srv-record": Flag(
        "string", "", "the SRV record to search for backends nodes. Example: _etcd-client._tcp.example.com"
    ),
    "sync-only": Flag("", "", "sync without check_cmd and reload_cmd"),
    "table": Flag("string", "", "the name of the DynamoDB table", "dynamodb"),
    "user-id": Flag("string", "", "Vault user-id to use with the app-id backend", "vault"),
    "username": Flag("string", "", "the username to authenticate as (etcdv3 backend)"),
    "version": Flag("", "", "print version and exit"),
    "watch": Flag("", "", "enable watch support"),
}
# pitrix-agent's own flags, which confd does not have: ``-help`` lists them as a second group.
OWN_FLAGS: dict[str, Flag] = {
    "log-format": Flag(
        "string", "", "json (the default when stderr is not a terminal) or text (confd's lines)"
    ),
    "metadata-listen": Flag(
        "string",
        "",
        "appcenter profile: ADDR:PORT of the plain-HTTP metadata proxy, or off"
        " (default $PITRIX_VM_IP:80 in the appcenter profile, else 127.0.0.88:80)",
    ),
    "profile": Flag("string", '"native"', "compatibility profile: native or appcenter"),
    "root": Flag("string", "", "the VM's root directory (default $PITRIX_VM_ROOT or /)"),
    "template-compare": Flag(
        "string",
        "",
        "how templates' eq/ne/lt/le/gt/ge compare: go (text/template's) or yunify (number-aware;"
        " the appcenter profile's default)",
    ),
}


# What Go's flag package accepts for ``-flag=value`` of a boolean flag, lower-cased.
GO_BOOLEANS = {"1": True, "t": True, "true": True, "0": False, "f": False, "false": False}


def go_boolean(text: str) -> bool:
    """Go's flag package accepts these for ``-flag=value``."""
    value = GO_BOOLEANS.get(text.lower())
    if value is None:
        import argparse

        raise argparse.ArgumentTypeError(f"invalid boolean value {text!r}")
    return value


def add_confd_flags(parser: argparse.ArgumentParser) -> None:
    """Add every flag of ``FLAGS`` the parser does not have yet, single- and double-dash."""
    have = {opt for action in parser._actions for opt in action.option_strings}
    for name, flag in (FLAGS | OWN_FLAGS).items():
        if f"-{name}" in have:
            continue
        dest = name.replace("-", "_")
        if flag.kind == "":
            parser.add_argument(
                f"-{name}", f"--{name}", dest=dest, nargs="?", const=True, default=None, type=go_boolean
            )
        elif flag.kind == "value":
            parser.add_argument(f"-{name}", f"--{name}", dest=dest, action="append", default=None)
        else:
            parser.add_argument(f"-{name}", f"--{name}", dest=dest, default=None)
    if "-help" not in have:
        import argparse

        parser.add_argument("-help", action="help", help=argparse.SUPPRESS)
    parser.format_help = lambda: help_text(parser.prog)  # type: ignore[method-assign]


def help_text(prog: str) -> str:
    """The usage Go's flag package prints for confd (each flag, its type, description and
    default), then pitrix-agent's own flags in the same format: built from the tables, so
    ``-help`` costs no more than parsing the command line."""
    lines = [f"Usage of {prog}:"]
    _flag_lines(lines, FLAGS)
    lines.append("pitrix-agent's own flags (confd has none of these):")
    _flag_lines(lines, OWN_FLAGS)
    lines.append("Flags take one dash or two; a boolean flag takes -flag, -flag=true or -flag=false.")
    return "\n".join(lines) + "\n"


def _flag_lines(lines: list[str], flags: dict[str, Flag]) -> None:
    for name in sorted(flags):
        flag = flags[name]
        lines.append(f"  -{name}" + (f" {flag.kind}" if flag.kind else ""))
        text = flag.help
        if flag.missing_backend:
            text += f" (confd's {flag.missing_backend} backend: not available in pitrix-agent)"
        if flag.default:
            text += f" (default {flag.default})"
        lines.append(f"    \t{text}")


def refuse_missing_backends(args: argparse.Namespace | types.SimpleNamespace) -> None:
    """A flag that only a backend pitrix-agent lacks would read is an error naming both."""
    for name, flag in FLAGS.items():
        if flag.missing_backend and getattr(args, name.replace("-", "_"), None) not in (None, "", False):
            raise ConfigError(
                f"-{name}: only confd's {flag.missing_backend} backend uses this flag, and pitrix-agent"
                f" has no {flag.missing_backend} backend"
            )
