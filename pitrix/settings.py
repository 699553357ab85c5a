"""pitrixd's settings: one validated object from a TOML file, the environment and its flags.

Precedence, highest first: flags (pitrixd's command line, see :mod:`pitrix.daemon`), environment
(``PITRIX_<SECTION>__<KEY>``, e.g. ``PITRIX_API__LISTEN``), the TOML file
(``/etc/pitrix/pitrixd.toml`` or ``--config``), the defaults below. A bad value stops the daemon
at start with an error naming the key, rather than failing later in a code path.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pitrix.paths import default_state_dir

if TYPE_CHECKING:
    from pitrix.store.tls import EtcdTLS

DEFAULT_CONFIG_FILE = Path("/etc/pitrix/pitrixd.toml")


class ConfigError(Exception):
    """A configuration problem, with the offending key in the message."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EtcdSettings(_Section):
    endpoints: list[str] = Field(
        default_factory=list,
        description="etcd client URLs; empty starts a private embedded etcd under the state dir",
    )
    prefix: str = Field("/pitrix", description="key prefix for everything pitrixd stores")
    dial_timeout: float = Field(5.0, gt=0)
    ca_file: Path | None = Field(None, description="CA of an external etcd's server certificate (https)")
    cert_file: Path | None = Field(None, description="client certificate for an external etcd")
    key_file: Path | None = Field(None, description="the client certificate's private key")

    @field_validator("prefix")
    @classmethod
    def _prefix_absolute(cls, value: str) -> str:
        if not value.startswith("/") or value.endswith("/"):
            raise ValueError("must start with '/' and not end with '/'")
        return value

    @model_validator(mode="after")
    def _tls_consistent(self) -> EtcdSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (a client certificate and its key)")
        # Given without endpoints they are refused by the daemon once its --etcd flags are in.
        tls_given = self.ca_file is not None or self.cert_file is not None
        for url in self.endpoints:
            if url.startswith("https://") and not tls_given:
                raise ValueError(f"endpoint {url} is https://: set ca_file (and cert_file/key_file)")
            if url.startswith("http://") and tls_given:
                raise ValueError(f"endpoint {url} is plain http:// but ca_file/cert_file/key_file are set")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: {path} is not a readable file")
        return self

    @property
    def tls(self) -> EtcdTLS | None:
        """The TLS material for an external etcd, or ``None`` for plain HTTP."""
        if self.ca_file is None and self.cert_file is None:
            return None
        from pitrix.store.tls import EtcdTLS  # not at import: that loads the store, gRPC and all

        return EtcdTLS(self.ca_file, self.cert_file, self.key_file)


class TokenEntry(_Section):
    """One bearer token of the admin API and the owner it acts as."""

    token: str = Field(min_length=16, description="the secret a client sends as 'Authorization: Bearer'")
    owner: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,62}$", description="the owner it acts as")
    admin: bool = Field(False, description="sees and acts on every owner's clusters; manages runtimes")


# A DNS name, an IPv4 address, or an IPv6 address in brackets: what a Host header carries before ':'.
_HOST = r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
HOST_NAME = re.compile(f"^{_HOST}$")
ORIGIN = re.compile(rf"^https?://{_HOST}(?::\d{{1,5}})?$")


class ApiSettings(_Section):
    listen: str = Field("127.0.0.1:9610", description="host:port of the admin API")
    unix_socket: Path | None = Field(None, description="serve the admin API on this unix socket instead")
    auth: Literal["auto", "tokens", "none"] = Field(
        "auto",
        description="'tokens': every request over TCP needs a bearer token; 'none': no auth (loopback "
        "listen only, for local development); 'auto': 'tokens' when any token is configured, "
        "else 'none' (and then a loopback listen address is required)",
    )
    tokens: list[TokenEntry] = Field(default_factory=list, description="bearer tokens, inline")
    tokens_file: Path | None = Field(
        None, description="a TOML file of [[tokens]] tables (token, owner, admin), read at start"
    )
    unix_socket_owner: str = Field(
        "admin",
        pattern=r"^[a-z][a-z0-9_.-]{0,62}$",
        description="owner (an admin) of requests without a token on the unix socket, "
        "which its file permissions guard",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="host names (or addresses) the API answers to besides loopback ones and the "
        "listen address; any other Host header is refused (421), which stops DNS rebinding",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="web origins (scheme://host[:port]) besides the API's own that may send it "
        "requests; any other Origin is refused (403)",
    )
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="largest request body accepted (413 beyond); keep it under the etcd's "
        "--max-request-bytes (1.5 MiB by default), since an app spec is stored whole",
    )
    events_kept: int = Field(
        1000, ge=10, le=100_000, description="events kept per cluster in the history (oldest dropped first)"
    )
    events_max_age: float = Field(
        7 * 86400.0, gt=0, description="seconds an event stays in a cluster's history at most"
    )
    ssh_idle_timeout: float = Field(
        900.0, gt=0, description="seconds a node shell (nodes ssh) may pass with no byte either way"
    )
    ssh_max_session: float = Field(8 * 3600.0, gt=0, description="seconds a node shell may last at most")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9610")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _bare_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not HOST_NAME.match(host):
                raise ValueError(f"{host!r} is not a host name or address (no scheme, port or path)")
        return [h.lower() for h in value]

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if not ORIGIN.match(origin):
                raise ValueError(f"{origin!r} is not an origin like https://ops.example.com[:8443]")
        return [o.lower() for o in value]

    @model_validator(mode="after")
    def _auth_none_only_on_loopback(self) -> ApiSettings:
        if self.auth == "none" and self.unix_socket is None and not self.loopback:
            raise ValueError("auth: 'none' is allowed only when api.listen is a loopback address")
        return self

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return self.host == "localhost"

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class SecretsSettings(_Section):
    """Where the key that seals secrets in etcd lives: never in etcd itself."""

    key_file: Path | None = Field(
        None,
        description="file holding the key that seals secrets in etcd (base64 of 32 bytes, mode 0600); "
        "default <state_dir>/secret.key, made on first start. Every pitrixd on one etcd needs the "
        "same file: copy it to each replica",
    )
    previous_key_files: list[Path] = Field(
        default_factory=list,
        description="keys replaced by key_file, still used to open what they sealed (key rotation)",
    )

    def key_path(self, state_dir: Path) -> Path:
        return self.key_file if self.key_file is not None else state_dir / "secret.key"


class RecoverySettings(_Section):
    """When silent nodes of active clusters are replaced (see pitrix.runtime.recovery)."""

    enabled: bool = Field(True, description="replace silent nodes by itself")
    grace: float = Field(30.0, gt=0, description="seconds a silent node waits before replacement")
    max_down_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="more silent nodes than this share of a cluster halts auto-recovery (meltdown guard)",
    )
    metadata: bool = Field(True, description="replace a lost member of a metadata cluster of several")
    metadata_interval: float = Field(5.0, gt=0, description="seconds between looks at metadata members")
    metadata_silence: float = Field(
        30.0, gt=0, description="seconds a running metadata member's metad may be silent before it is lost"
    )


class StepRetrySettings(_Section):
    """How a step is re-run after a retryable cloud error (see pitrix.runtime.retrying)."""

    attempts: int = Field(5, ge=1, description="runs of a step in all, the first included")
    first_delay: float = Field(1.0, ge=0, description="seconds before the second run; doubles each time")
    max_delay: float = Field(15.0, ge=0, description="longest pause between two runs (seconds)")

    @model_validator(mode="after")
    def _ordered(self) -> StepRetrySettings:
        if self.max_delay < self.first_delay:
            raise ValueError(f"max_delay {self.max_delay} must be at least first_delay {self.first_delay}")
        return self


class RuntimeSettings(_Section):
    """How this replica supervises clusters."""

    replica_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
        description="this replica's id among pitrixd on one etcd (default: made once, kept in "
        "<state_dir>/replica-id)",
    )
    owner_ttl: int = Field(10, ge=2, description="seconds a dead replica's clusters wait to be adopted")
    max_jobs: int = Field(
        100, ge=1, description="cluster jobs run at once by this replica; more wait their turn"
    )
    recovery: RecoverySettings = Field(default_factory=lambda: RecoverySettings())
    step_retry: StepRetrySettings = Field(default_factory=lambda: StepRetrySettings())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PITRIX_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    log_level: str = "info"
    stop_timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        description="seconds pitrixd's stop may take (API, jobs, store); what overruns is abandoned "
        "(jobs resume from their journal at the next start) and pitrixd exits anyway",
    )
    # Metadata clusters speak mutual TLS. Kept as a setting only so that an old configuration's
    # ``false`` is refused with a reason instead of an unknown-key error.
    metadata_tls: bool = True
    etcd: EtcdSettings = Field(default_factory=lambda: EtcdSettings())
    api: ApiSettings = Field(default_factory=lambda: ApiSettings())
    secrets: SecretsSettings = Field(default_factory=lambda: SecretsSettings())
    runtime: RuntimeSettings = Field(default_factory=lambda: RuntimeSettings())

    @field_validator("metadata_tls")
    @classmethod
    def _tls_only(cls, value: bool) -> bool:
        # Legacy source-address metad serves its management API where instances reach it, so any
        # instance could read every cluster on that metadata VM and remap others to itself.
        if not value:
            raise ValueError(
                "false is no longer offered: metad's legacy source-address mode would open its "
                "management API to every instance of the metadata VM (docs/security.md); run "
                "pitrix-metad --legacy-source-ip yourself where you need metad's model"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value.lower()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file; the file arrives as init kwargs from load().
        return (env_settings, init_settings)


class _Given(Settings):
    """Settings from the values passed alone: how flags go over what file and environment said."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


# pydantic's wording for a bound, in the words of the rest of the messages.
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be more than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
}


def _message(item: Any) -> str:
    if item["type"] == "value_error" and "error" in item.get("ctx", {}):
        return str(item["ctx"]["error"])  # a validator's own words, without pydantic's prefix
    bound = _BOUNDS.get(item["type"])
    if bound is not None and bound[0] in item.get("ctx", {}):
        return f"{bound[1].format(item['ctx'][bound[0]])}, not {item['input']!r}"
    return str(item["msg"])


def _describe(error: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        lines.append(f"  {key}: {_message(item)}")
    return "\n".join(lines)


def read_toml(file: Path, what: str) -> dict[str, Any]:
    """The TOML table in ``file``, or a ConfigError that starts with ``what`` (the key or role)."""
    try:
        return tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {file} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{what} {file} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {file} is not valid TOML: {exc}") from None


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, name = dotted.split(".")
    for section in sections:
        tree = tree.setdefault(section, {})
    tree[name] = value


def load(path: Path | None = None, flags: Mapping[str, Any] | None = None) -> Settings:
    """Read settings from ``path`` (default file if present), the environment and ``flags``.

    ``flags`` maps dotted keys (``runtime.max_jobs``) to values given on the command line; a
    ``None`` value was not given. They win over the environment, which wins over the file.
    """
    data: dict[str, Any] = {}
    source = "defaults and environment"
    file = path if path is not None else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
    if file is not None:
        source = str(file)
        data = read_toml(file, "config file")
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc
    given = {key: value for key, value in (flags or {}).items() if value is not None}
    if not given:
        return settings
    tree = settings.model_dump(exclude_unset=True)
    for key, value in given.items():
        _set(tree, key, value)
    try:
        return _Given(**tree)  # reads no environment again: the flags stay on top
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "flags")) from exc
