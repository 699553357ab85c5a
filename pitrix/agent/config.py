"""The agent's configuration: confd.toml keys plus a ``[pitrix]`` table, overridden by flags.

The file is what userdata (or pitrixd over SSH) writes into the VM; flags are what an operator or
the confd-compatible command line gives. A flag given on the command line always wins over the
file, a key absent from both takes confd's default. Paths from the file live inside the VM and
are resolved under its root; paths from the command line are taken as given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pitrix.agent.errors import ConfigError
from pitrix.agent.rootfs import under_root

DEFAULT_CONFIG_FILE = "/etc/pitrix/agent.toml"
BACKENDS = ("metad", "file", "env", "etcdv3", "redis", "zookeeper")
LOG_LEVELS = ("debug", "info", "warning", "warn", "error", "panic", "fatal")


class _Record:
    """Equality and a repr over ``__slots__``: what ``@dataclass`` gave the two classes below,
    without generating their code at import (the dataclass machinery made about a fifth of a
    one-shot render's start; the agent starts on every VM, often)."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclasses were

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({inner})"


class AgentConfig(_Record):
    """Everything the agent needs to run, already resolved to host paths."""

    __slots__ = (
        "backend",
        "basic_auth",
        "bind_address",
        "bootstrap_patience",
        "bootstrap_token",
        "client_cakeys",
        "client_cert",
        "client_insecure",
        "client_key",
        "command_timeout",
        "confdir",
        "files",
        "filter",
        "health_action_cmd",
        "health_action_timeout",
        "health_cmd",
        "health_interval",
        "health_timeout",
        "health_unhealthy_threshold",
        "heartbeat_interval",
        "hook_timeout",
        "interval",
        "keep_stage_file",
        "log_format",
        "log_level",
        "max_settle",
        "metadata_listen",
        "nodes",
        "noop",
        "onetime",
        "password",
        "prefix",
        "profile",
        "quiet_period",
        "report_interval",
        "retry_interval",
        "root",
        "run_commands",
        "scheme",
        "separator",
        "srv_domain",
        "srv_record",
        "state_dir",
        "sync_only",
        "template_compare",
        "username",
        "watch",
    )

    def __init__(
        self,
        root: Path,
        *,
        backend: str = "metad",
        nodes: list[str] | None = None,
        confdir: Path = Path("/etc/confd"),
        prefix: str = "",
        watch: bool = False,
        interval: float = 600.0,
        onetime: bool = False,
        noop: bool = False,
        sync_only: bool = False,
        keep_stage_file: bool = False,
        log_level: str = "info",
        files: list[Path] | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        client_cakeys: Path | None = None,
        username: str = "",
        password: str = "",
        state_dir: Path = Path("/var/lib/pitrix-agent"),
        bind_address: str | None = None,
        heartbeat_interval: float = 5.0,
        command_timeout: float = 600.0,
        hook_timeout: float = 60.0,
        run_commands: bool = True,
        health_cmd: str = "",
        health_interval: float = 10.0,
        health_timeout: float = 60.0,
        health_unhealthy_threshold: int = 1,
        health_action_cmd: str = "",
        health_action_timeout: float = 60.0,
        retry_interval: float = 30.0,
        quiet_period: float = 0.05,
        max_settle: float = 1.0,
        report_interval: float = 0.25,
        bootstrap_token: str = "",
        bootstrap_patience: float = 10.0,
        separator: str = "",
        filter: str = "*",
        basic_auth: bool = False,
        client_insecure: bool = False,
        scheme: str = "http",
        srv_record: str = "",
        srv_domain: str = "",
        log_format: str = "",
        profile: str = "native",
        metadata_listen: str = "",
        template_compare: str = "",
    ) -> None:
        self.root = root
        self.backend = backend
        self.nodes = [] if nodes is None else nodes
        self.confdir = confdir
        self.prefix = prefix
        self.watch = watch
        self.interval = interval
        self.onetime = onetime
        self.noop = noop
        self.sync_only = sync_only
        self.keep_stage_file = keep_stage_file
        self.log_level = log_level
        self.files = [] if files is None else files
        self.client_cert = client_cert
        self.client_key = client_key
        self.client_cakeys = client_cakeys
        self.username = username
        self.password = password
        self.state_dir = state_dir
        self.bind_address = bind_address
        self.heartbeat_interval = heartbeat_interval
        self.command_timeout = command_timeout
        self.hook_timeout = hook_timeout
        self.run_commands = run_commands
        self.health_cmd = health_cmd
        self.health_interval = health_interval
        self.health_timeout = health_timeout
        self.health_unhealthy_threshold = health_unhealthy_threshold
        self.health_action_cmd = health_action_cmd
        self.health_action_timeout = health_action_timeout
        self.retry_interval = retry_interval
        self.quiet_period = quiet_period
        self.max_settle = max_settle
        # In watch mode, applied reports go at most this often (seconds); a round within it of the
        # last report has its report sent when it is up, the newest only (0: every round at once).
        self.report_interval = report_interval
        self.bootstrap_token = bootstrap_token
        # Seconds one bootstrap keeps asking a metad that does not know the token yet (the runtime maps
        # an instance moments after it runs) before the agent's own backoff takes over.
        self.bootstrap_patience = bootstrap_patience
        # confd's remaining flags (pitrix/agent/flags.py says which backend reads each one).
        self.separator = separator
        self.filter = filter
        self.basic_auth = basic_auth
        self.client_insecure = client_insecure
        self.scheme = scheme
        self.srv_record = srv_record
        self.srv_domain = srv_domain
        self.log_format = log_format
        # The AppCenter compatibility profile (``profiles.py``): "native" or "appcenter".
        self.profile = profile
        # Where the plain-HTTP metadata proxy listens ("ADDR:PORT"; "off": not at all). Resolved by
        # load_config: in the appcenter profile it defaults to $PITRIX_VM_IP:80, else 127.0.0.88:80.
        self.metadata_listen = metadata_listen
        # How templates' eq/ne/lt/le/gt/ge compare: "go" (text/template's) or "yunify" (confd-yunify's
        # number-aware ones). Resolved by load_config: "yunify" in the appcenter profile.
        self.template_compare = template_compare

    @property
    def template_dir(self) -> Path:
        return self.confdir / "templates"

    @property
    def resource_dir(self) -> Path:
        return self.confdir / "conf.d"


class Overrides(_Record):
    """Values given on the command line; ``None`` means "not given"."""

    __slots__ = (
        "backend",
        "basic_auth",
        "client_cakeys",
        "client_cert",
        "client_insecure",
        "client_key",
        "confdir",
        "files",
        "filter",
        "interval",
        "keep_stage_file",
        "log_format",
        "log_level",
        "metadata_listen",
        "nodes",
        "noop",
        "onetime",
        "password",
        "prefix",
        "profile",
        "scheme",
        "separator",
        "srv_domain",
        "srv_record",
        "sync_only",
        "template_compare",
        "username",
        "watch",
    )

    def __init__(
        self,
        *,
        backend: str | None = None,
        nodes: list[str] | None = None,
        confdir: Path | None = None,
        prefix: str | None = None,
        watch: bool | None = None,
        interval: float | None = None,
        onetime: bool | None = None,
        noop: bool | None = None,
        sync_only: bool | None = None,
        keep_stage_file: bool | None = None,
        log_level: str | None = None,
        files: list[Path] | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        client_cakeys: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        separator: str | None = None,
        filter: str | None = None,
        basic_auth: bool | None = None,
        client_insecure: bool | None = None,
        scheme: str | None = None,
        srv_record: str | None = None,
        srv_domain: str | None = None,
        log_format: str | None = None,
        profile: str | None = None,
        metadata_listen: str | None = None,
        template_compare: str | None = None,
    ) -> None:
        self.backend = backend
        self.nodes = nodes
        self.confdir = confdir
        self.prefix = prefix
        self.watch = watch
        self.interval = interval
        self.onetime = onetime
        self.noop = noop
        self.sync_only = sync_only
        self.keep_stage_file = keep_stage_file
        self.log_level = log_level
        self.files = files
        self.client_cert = client_cert
        self.client_key = client_key
        self.client_cakeys = client_cakeys
        self.username = username
        self.password = password
        self.separator = separator
        self.filter = filter
        self.basic_auth = basic_auth
        self.client_insecure = client_insecure
        self.scheme = scheme
        self.srv_record = srv_record
        self.srv_domain = srv_domain
        self.log_format = log_format
        self.profile = profile
        self.metadata_listen = metadata_listen
        self.template_compare = template_compare


# confd.toml key -> (AgentConfig field, kind). Kinds: str, bool, number, list (of str), path,
# paths (list of paths under the root).
_CONFD_KEYS: dict[str, tuple[str, str]] = {
    "backend": ("backend", "str"),
    "nodes": ("nodes", "list"),
    "confdir": ("confdir", "path"),
    "prefix": ("prefix", "str"),
    "watch": ("watch", "bool"),
    "interval": ("interval", "number"),
    "onetime": ("onetime", "bool"),
    "noop": ("noop", "bool"),
    "sync-only": ("sync_only", "bool"),
    "sync_only": ("sync_only", "bool"),
    "keep-stage-file": ("keep_stage_file", "bool"),
    "keep_stage_file": ("keep_stage_file", "bool"),
    "log-level": ("log_level", "str"),
    "log_level": ("log_level", "str"),
    "file": ("files", "paths"),
    "client_cert": ("client_cert", "path"),
    "client_key": ("client_key", "path"),
    "client_cakeys": ("client_cakeys", "path"),
    "username": ("username", "str"),
    "password": ("password", "str"),
    "separator": ("separator", "str"),
    "filter": ("filter", "str"),
    "basic_auth": ("basic_auth", "bool"),
    "client_insecure": ("client_insecure", "bool"),
    "scheme": ("scheme", "str"),
    "srv_record": ("srv_record", "str"),
    "srv_domain": ("srv_domain", "str"),
    "log-format": ("log_format", "str"),
    "log_format": ("log_format", "str"),
    # The profile's settings belong in [pitrix]; accepted at the top level too, so a config written
    # either way starts the agent rather than stopping it on an unknown key.
    "profile": ("profile", "str"),
    "metadata_listen": ("metadata_listen", "str"),
    "template_compare": ("template_compare", "str"),
}
# confd keys that configure things this agent has no use for; accepted so confd.toml files load.
_CONFD_IGNORED = frozenset(
    {
        "auth_token",
        "auth_type",
        "app_id",
        "user_id",
        "role_id",
        "secret_id",
        "path",
        "table",
    }
)
_PITRIX_KEYS: dict[str, tuple[str, str]] = {
    "state_dir": ("state_dir", "path"),
    "bind_address": ("bind_address", "str"),
    "heartbeat_interval": ("heartbeat_interval", "number"),
    "command_timeout": ("command_timeout", "number"),
    "hook_timeout": ("hook_timeout", "number"),
    "run_commands": ("run_commands", "bool"),
    "health_cmd": ("health_cmd", "str"),
    "health_interval": ("health_interval", "number"),
    "health_timeout": ("health_timeout", "number"),
    "health_unhealthy_threshold": ("health_unhealthy_threshold", "int"),
    "health_action_cmd": ("health_action_cmd", "str"),
    "health_action_timeout": ("health_action_timeout", "number"),
    "retry_interval": ("retry_interval", "number"),
    "quiet_period": ("quiet_period", "number"),
    "max_settle": ("max_settle", "number"),
    "report_interval": ("report_interval", "number"),
    "bootstrap_token": ("bootstrap_token", "str"),
    "bootstrap_patience": ("bootstrap_patience", "number"),
    "profile": ("profile", "str"),
    "metadata_listen": ("metadata_listen", "str"),
    "template_compare": ("template_compare", "str"),
}


def load_config(
    root: Path,
    config_file: Path | None = None,
    overrides: Overrides | None = None,
    environ: dict[str, str] | None = None,
) -> AgentConfig:
    """Build the config: defaults, then the file, then the flags; then validate.

    ``config_file`` None means the default path under the root, where an absent file is fine; an
    explicitly named file must exist.
    """
    env = os.environ if environ is None else environ
    cfg = AgentConfig(
        root=root, confdir=under_root(root, "/etc/confd"), state_dir=under_root(root, "/var/lib/pitrix-agent")
    )
    prefix_given = False
    if config_file is None:
        path = under_root(root, DEFAULT_CONFIG_FILE)
        data = _read_toml(path) if path.exists() else {}
    else:
        path = config_file
        if not path.exists():
            raise ConfigError(f"config file {path}: no such file")
        data = _read_toml(path)
    prefix_given = "prefix" in data
    for key, value in data.items():
        if key == "pitrix":
            if not isinstance(value, dict):
                raise ConfigError(f"config file {path}: [pitrix] must be a table")
            for pkey, pvalue in value.items():
                if pkey not in _PITRIX_KEYS:
                    raise ConfigError(f"config file {path}: unknown key pitrix.{pkey}")
                attr, kind = _PITRIX_KEYS[pkey]
                setattr(cfg, attr, _convert(root, path, f"pitrix.{pkey}", kind, pvalue))
        elif key in _CONFD_KEYS:
            attr, kind = _CONFD_KEYS[key]
            setattr(cfg, attr, _convert(root, path, key, kind, value))
        elif key not in _CONFD_IGNORED:
            raise ConfigError(f"config file {path}: unknown key {key!r}")
    if overrides is not None:
        for name in Overrides.__slots__:
            value = getattr(overrides, name)
            if value is not None:
                setattr(cfg, name, value)
        prefix_given = prefix_given or overrides.prefix is not None
    if cfg.bind_address is None and env.get("PITRIX_VM_IP"):
        cfg.bind_address = env["PITRIX_VM_IP"]
    if not prefix_given and cfg.backend == "metad":
        # metad serves each instance its own view under /self; confd's own default ("") would
        # show it the whole tree, which metad refuses in any case.
        from pitrix.metad import keyspace  # here: the file backend's one-shot needs none of it

        cfg.prefix = keyspace.SELF
    _validate(cfg)
    from pitrix.agent.profiles import resolve_profile  # the profile's own defaults and checks

    resolve_profile(cfg, env)
    return cfg


def _read_toml(path: Path) -> dict[str, Any]:
    """The config file's table; tomllib is loaded only for a file that says something."""
    try:
        with path.open("rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    if not data.strip():
        return {}
    import tomllib

    try:
        return tomllib.loads(data.decode())
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


def _convert(root: Path, path: Path, key: str, kind: str, value: Any) -> Any:
    where = f"config file {path}: {key}"
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {type(value).__name__}")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return float(value)
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
        return value
    if kind == "list":
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return list(value)
    if kind == "path":
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a non-empty path string")
        return under_root(root, value)
    if kind == "paths":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
            raise ConfigError(f"{where} must be a path or a list of paths")
        return [under_root(root, v) for v in items]
    raise AssertionError(kind)


def _validate(cfg: AgentConfig) -> None:
    _validate_confd(cfg)
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"backend: unknown backend {cfg.backend!r} (expected one of {', '.join(BACKENDS)})")
    if cfg.log_level.lower() not in LOG_LEVELS:
        raise ConfigError(f"log-level: unknown level {cfg.log_level!r}")
    for name in (
        "interval",
        "heartbeat_interval",
        "command_timeout",
        "hook_timeout",
        "health_interval",
        "health_timeout",
        "health_unhealthy_threshold",
        "health_action_timeout",
        "retry_interval",
        "bootstrap_patience",
    ):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"{name}: must be positive, not {getattr(cfg, name)}")
    for name in ("quiet_period", "max_settle", "report_interval"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}: must not be negative, not {getattr(cfg, name)}")
    if cfg.prefix and not cfg.prefix.startswith("/"):
        cfg.prefix = "/" + cfg.prefix
    cfg.prefix = cfg.prefix.rstrip("/")
    if cfg.backend == "metad" and not cfg.nodes and not (cfg.srv_record or cfg.srv_domain):
        raise ConfigError("nodes: the metad backend needs at least one node (e.g. http://127.100.0.2:8080)")
    if cfg.backend == "etcdv3" and not cfg.nodes:
        raise ConfigError("nodes: the etcdv3 backend needs at least one node")
    if cfg.backend == "file" and not cfg.files:
        raise ConfigError("file: the file backend needs at least one YAML file")
    for i, node in enumerate(cfg.nodes):
        if not node:
            raise ConfigError(f"nodes[{i}]: empty node address")


# confd's backends pitrix-agent does not have, and what confd's "etcd" now means (its etcd v2
# client is gone; confd reads both names with its v3 client).
CONFD_ONLY_BACKENDS = ("consul", "vault", "dynamodb", "ssm", "rancher")
BACKEND_ALIASES = {"etcd": "etcdv3"}
LOG_FORMATS = ("json", "text")
# confd's default node for a backend given none (its config.go), where pitrix has the backend.
DEFAULT_NODES = {"redis": "127.0.0.1:6379", "zookeeper": "127.0.0.1:2181", "etcdv3": "127.0.0.1:2379"}


def _validate_confd(cfg: AgentConfig) -> None:
    """confd's own settings: backend names as confd knows them, its default nodes, its formats."""
    cfg.backend = BACKEND_ALIASES.get(cfg.backend, cfg.backend)
    if cfg.backend in CONFD_ONLY_BACKENDS:
        raise ConfigError(
            f"backend: unknown backend {cfg.backend!r}: confd's {cfg.backend} backend is not available"
            f" in pitrix-agent (expected one of {', '.join(BACKENDS)})"
        )
    if cfg.backend in DEFAULT_NODES and not cfg.nodes:
        cfg.nodes = [DEFAULT_NODES[cfg.backend]]
    if cfg.log_format and cfg.log_format not in LOG_FORMATS:
        raise ConfigError(f"log-format: unknown format {cfg.log_format!r} (expected json or text)")
    if cfg.scheme not in ("http", "https"):
        raise ConfigError(f"scheme: must be http or https, not {cfg.scheme!r}")
    if not cfg.filter:
        raise ConfigError("filter: must not be empty (confd's default is *)")
    if cfg.client_insecure and cfg.backend == "metad":
        raise ConfigError(
            "client-insecure: the metad backend always verifies metad's certificate"
            " (confd reads this flag only for its etcd backend)"
        )
    tls = [n for n, v in (("client-cert", cfg.client_cert), ("client-key", cfg.client_key)) if v]
    if cfg.client_cakeys:
        tls.append("client-ca-keys")
    if tls and cfg.backend == "etcdv3":
        raise ConfigError(f"{tls[0]}: the etcdv3 backend has no TLS in pitrix-agent (plain gRPC only)")
