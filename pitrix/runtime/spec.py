"""The application spec: what an app package says about its roles, services and parameters.

Shaped like OpenPitrix's cluster spec (roles with count, size, image, volume, lifecycle services
with ``order``/``nodes_to_execute_on``/``post_start_service``, a health check, typed env
parameters, endpoints) plus an update policy for rolling env changes. ``schemas/app-spec.json`` is
generated from these models (``python -m pitrix.runtime.spec``) so the schema never drifts from
what pitrixd accepts. Validation errors name the field (``roles.0.services.start.cmd: ...``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pitrix.runtime.wording import describe

ServiceName = Literal[
    "init",
    "start",
    "stop",
    "restart",
    "pre_scale_out",
    "scale_out",
    "scale_in",
    "destroy",
    # upgrade: run on each node of an upgrade's batch (PITRIX_FROM_VERSION, PITRIX_TO_VERSION set)
    "upgrade",
    "rollback",
]
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
# Role names may hold ``_`` as AppCenter's do (``etcd_node``); node ids stay ``<role>-<index>``.
ROLE_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,30}$"
# AppCenter allows keys such as ``4lw.commands.whitelist`` or ``-p``: a parameter name is any of
# these characters; only names that are shell identifiers reach a process environment.
ENV_KEY_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class SpecError(ValueError):
    """An app spec failed validation; the message names each offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Service(_Strict):
    cmd: str = Field(min_length=1, description="shell command, run with the VM root as working directory")
    order: int = Field(
        0, ge=0, description="roles run a service in ascending order; same order runs together"
    )
    timeout: int = Field(300, gt=0, le=86400, description="seconds")
    nodes_to_execute_on: int | None = Field(
        None, ge=1, description="run on this many nodes of the role (the first ones); all when absent"
    )
    post_start_service: bool = Field(
        False, description="init only: run after the start service instead of before it"
    )
    # health: restart batches
    max_in_flight: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="rolling restart: nodes of the role restarted at once (default 1); read "
        "from the restart service, or from start for a role restarted by stop then start",
    )

    # members: membership hooks (docs/app-packages.md, "Membership hooks").
    pre_check: str = Field(
        "",
        description="scale_out/scale_in only: run on one live node of the role before anything "
        "changes; a non-zero exit refuses the scaling with its output",
    )
    publish: bool = Field(
        False,
        description="the command's output is a JSON object written into the cluster's metadata "
        "under published/ (every node reads it as /self/published/<key>)",
    )
    allow_force: bool = Field(
        True,
        description="destroy only: false makes a failing destroy veto the scale-in or delete "
        "(AppCenter's allow_force); true lets it go on",
    )


# Where a volume may not be mounted: over the system's own directories a node would stop working.
RESERVED_MOUNTS = (
    "bin",
    "boot",
    "dev",
    "etc",
    "lib",
    "lib64",
    "proc",
    "root",
    "run",
    "sbin",
    "sys",
    "tmp",
    "usr",
    "var",
)
MOUNT_POINT = rf"^(?!/({'|'.join(RESERVED_MOUNTS)})$)(/[A-Za-z0-9_][A-Za-z0-9._-]*)+$"


class Volume(_Strict):
    """A block volume per node of the role, made and mounted before its ``init``, deleted with it."""

    # Python's re: the mount point's pattern looks ahead (the schema keeps it, ECMA regexes do too).
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")

    size: int = Field(ge=1, le=65536, description="GiB")
    mount_point: str = Field(
        "/data",
        pattern=MOUNT_POINT,
        max_length=200,
        description="absolute path where the node mounts it (kept across reboots in /etc/fstab); "
        "not a system directory such as /etc or /var",
    )
    filesystem: Literal["ext4", "xfs"] = "ext4"
    mount_options: str = Field(
        "",
        pattern=r"^[A-Za-z0-9_=,.:+-]*$",
        max_length=200,
        description="mount(8) options, comma separated (e.g. noatime); empty: defaults",
    )


TEMPLATE_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Userdata carries the templates (and clouds cap userdata: EC2 at 16 KiB), so a role's together
# stay well under that; a larger configuration belongs in the image.
TEMPLATES_MAX = 12 * 1024


class Template(_Strict):
    """A confd template shipped with the app: every node of its role renders it from its ``/self``.

    It reaches the node as a resource (``/etc/confd/conf.d/app-<name>.toml``) and its source
    (``/etc/confd/templates/app-<name>.tmpl``), written by userdata or over SSH with the agent's
    other files; the ``app-`` prefix keeps them apart from what the image brings.
    """

    name: str = Field(pattern=TEMPLATE_NAME)
    dest: str = Field(pattern=r"^/", description="absolute path of the rendered file on the node")
    text: str = Field(min_length=1, description="Go text/template source with confd's functions")
    keys: list[str] = Field(
        default_factory=lambda: ["/"], min_length=1, description="what it reads, under /self"
    )
    mode: str = Field("0644", pattern=r"^0?[0-7]{3,4}$", description="octal file mode")
    check_cmd: str = Field("", description="confd's check_cmd: {{.src}} is the staged file")
    reload_cmd: str = Field("", description="run after the file is replaced; a failure rolls back")

    @field_validator("keys")
    @classmethod
    def _absolute_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not key.startswith("/"):
                raise ValueError(f"{key!r}: keys are paths under /self, starting with /")
        return value

    @field_validator("text")
    @classmethod
    def _parses(cls, value: str) -> str:
        """An app whose template cannot parse is refused here, not found out on every node."""
        from pitrix.gotemplate import TemplateError, parse_confd

        try:
            parse_confd(value, name="text")  # as the agent parses it: confd's functions by name
        except TemplateError as exc:
            raise ValueError(f"does not parse: {exc}") from None
        return value


class HealthCheck(_Strict):
    cmd: str = Field(min_length=1, description="exit status 0 means healthy")
    interval: int = Field(30, ge=1, le=86400, description="seconds between checks")
    timeout: int = Field(10, ge=1, le=3600, description="seconds before a check counts as failed")
    unhealthy_threshold: int = Field(3, ge=1, le=100, description="failures in a row before unhealthy")
    action_cmd: str = Field(
        "", description="run on the node once each time it turns unhealthy (its threshold reached)"
    )
    action_timeout: int = Field(60, ge=1, le=3600, description="seconds before action_cmd is cut off")


MONITOR_ITEM_PATTERN = r"^[a-zA-Z_][a-zA-Z0-9_]{0,63}$"
MONITOR_ITEMS_MAX = 64


class MonitorItem(_Strict):
    """One number a role's monitor command prints (docs/app-packages.md, "Monitor items")."""

    unit: str = Field("", max_length=32, pattern=r"^[A-Za-z0-9_%/.-]*$", description="bytes, seconds, %, ...")
    kind: Literal["gauge", "counter"] = Field(
        "gauge", description="gauge: a level that goes up and down; counter: a running total that only grows"
    )
    description: str = Field("", max_length=200)


class Monitor(_Strict):
    """A command whose output is numbers by name: one ``name value`` per line, or one JSON object
    ``{"name": number}`` (AppCenter's monitor output). Its nodes' agents run it every ``interval``
    and report the declared items; pitrixd shows them as Prometheus series and plots them."""

    cmd: str = Field(min_length=1, description="prints the items; run on every node of the role")
    interval: int = Field(30, ge=5, le=3600, description="seconds between runs")
    timeout: int = Field(10, ge=1, le=300, description="seconds before a run is cut off (nothing reported)")
    items: dict[str, MonitorItem] = Field(min_length=1, description="the numbers reported, by name")

    @field_validator("items", mode="before")
    @classmethod
    def _items_shorthand(cls, value: Any) -> Any:
        """``items: [a, b]`` is shorthand for gauges without a unit."""
        if isinstance(value, list):
            return {name: {} for name in value}
        return value

    @field_validator("items")
    @classmethod
    def _item_names(cls, value: dict[str, MonitorItem]) -> dict[str, MonitorItem]:
        if len(value) > MONITOR_ITEMS_MAX:
            raise ValueError(f"{len(value)} items; a role's monitor reports at most {MONITOR_ITEMS_MAX}")
        for name in value:
            if not re.fullmatch(MONITOR_ITEM_PATTERN, name):
                raise ValueError(f"{name!r} is not an item name (letters, digits and _, not a digit first)")
        return value


EnvType = Literal["string", "integer", "number", "boolean", "password"]
Scalar = str | int | float | bool


def _scalar_text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class EnvParam(_Strict):
    """One application parameter of a role, published as ``/clusters/<cid>/env/<role>/<key>``
    (a cluster-level one, ``AppSpec.env``, is published under every role that lacks the key)."""

    type: EnvType = "string"
    default: Scalar | None = None
    range: list[Scalar] | None = Field(None, min_length=1, description="the only values allowed")
    min: float | None = None
    max: float | None = None
    changeable: bool = Field(True, description="whether update_env may change it after create")
    description: str = ""
    # -- params: the constraints packagers ask for besides range/min/max ------------------------
    pattern: str | None = Field(
        None, min_length=1, description="a regular expression the whole value must match"
    )
    required: bool = Field(
        False, description="with no default, create is refused unless the request gives a value"
    )
    multichoice: bool = Field(
        False, description="the value is a comma-separated subset of range (each item at most once)"
    )

    @model_validator(mode="after")
    def _default_fits(self) -> EnvParam:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a regular expression: {exc}") from None
        if self.multichoice and (self.range is None or self.type != "string"):
            raise ValueError("multichoice needs type string and a range to choose from")
        if self.default is not None:
            self.check(self.default)
        return self

    def _check_choices(self, text: str) -> str:
        """A multichoice value: its items (spaces around them dropped), each in range, once."""
        allowed = [_scalar_text(v) for v in self.range or []]
        items = [item.strip() for item in text.split(",")] if text.strip() else []
        for item in items:
            if item not in allowed:
                raise ValueError(f"{item!r} is not one of {', '.join(allowed)}")
        twice = sorted({i for i in items if items.count(i) > 1})
        if twice:
            raise ValueError(f"{twice[0]!r} is chosen twice")
        return ",".join(items)

    def check(self, value: Any) -> str:
        """``value`` as the text agents see, or ValueError saying what is wrong with it."""
        if isinstance(value, list | dict) or value is None:
            raise ValueError(f"expected a {self.type}, got {type(value).__name__}")
        text = _scalar_text(value)
        if self.type == "boolean":
            if text.lower() not in ("true", "false"):
                raise ValueError(f"expected true or false, got {text!r}")
            text = text.lower()
        elif self.type in ("integer", "number"):
            try:
                number = int(text) if self.type == "integer" else float(text)
            except ValueError:
                raise ValueError(f"expected an {self.type}, got {text!r}") from None
            if isinstance(value, bool):
                raise ValueError(f"expected an {self.type}, got {text!r}")
            if self.min is not None and number < self.min:
                raise ValueError(f"{text} is below the minimum {_scalar_text(self.min)}")
            if self.max is not None and number > self.max:
                raise ValueError(f"{text} is above the maximum {_scalar_text(self.max)}")
        if self.multichoice:
            return self._check_choices(text)
        if self.pattern is not None and re.fullmatch(self.pattern, text) is None:
            shown = "the value" if self.type == "password" else repr(text)  # a password is never quoted
            raise ValueError(f"{shown} does not match the pattern {self.pattern}")
        if self.range is not None:
            allowed = [_scalar_text(v) for v in self.range]
            if text not in allowed:
                shown = "the value" if self.type == "password" else repr(text)  # a password is never quoted
                raise ValueError(f"{shown} is not one of {', '.join(allowed)}")
        return text


# A custom service's parameter reaches its command as an environment variable of the same name, so
# its name is a shell variable's; names the shell or the dynamic loader act on are refused.
SERVICE_PARAM_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
RESERVED_PARAMS = frozenset(
    {"PATH", "HOME", "IFS", "PS4", "ENV", "BASH_ENV", "SHELL", "PWD", "OLDPWD", "CDPATH", "SHELLOPTS"}
)


class CustomService(_Strict):
    """A named operation the app offers besides its lifecycle (compact, backup, failover ...).

    It runs only when asked (``POST /v1/clusters/<id>/service``), on the nodes of the roles that
    declare it, with the typed parameters given then (or their defaults) in its environment.
    """

    cmd: str = Field(min_length=1, description="shell command; each parameter is an environment variable")
    description: str = ""
    params: dict[str, EnvParam] = Field(
        default_factory=dict,
        description="typed parameters (as a role's env; a plain value is shorthand for {default: value})",
    )
    timeout: int = Field(300, gt=0, le=86400, description="seconds")
    nodes_to_execute_on: int | None = Field(
        None, ge=1, description="run on this many nodes of the role (the first ones) unless nodes are named"
    )
    params_style: Literal["env", "json_arg"] = Field(
        "env",
        description="env: each parameter an environment variable; json_arg: the parameters as one "
        "JSON object appended to cmd as a single quoted argument (AppCenter's services)",
    )

    @field_validator("params", mode="before")
    @classmethod
    def _params_shorthand(cls, value: Any) -> Any:
        return _env_shorthand(value)

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, EnvParam]) -> dict[str, EnvParam]:
        for key in value:
            if not re.fullmatch(ENV_KEY_PATTERN, key):
                raise ValueError(f"{key!r} is not a parameter name (letters, digits, _ . -)")
            if key in RESERVED_PARAMS or key.startswith(("LD_", "PITRIX_")):
                raise ValueError(f"{key!r} is reserved (the shell, the loader or pitrix sets it)")
            if value[key].type == "password" and value[key].default is not None:
                # A spec is shown to whoever may deploy it: a secret is given when the service runs.
                raise ValueError(f"{key!r}: a password parameter has no default")
        return value

    @model_validator(mode="after")
    def _env_style_names(self) -> CustomService:
        """Parameters given as environment variables are named as shell variables; in one JSON
        argument (json_arg) they keep AppCenter's names, such as ``node.ip``."""
        if self.params_style == "env":
            for key in self.params:
                if not re.fullmatch(SERVICE_PARAM_PATTERN, key):
                    raise ValueError(
                        f"params.{key}: {key!r} is not a parameter name (letters, digits and _, as a shell "
                        "variable; params_style json_arg takes _ . - too)"
                    )
        return self


def _infer_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _env_shorthand(value: Any) -> Any:
    """A plain value is shorthand for ``{default: value}`` (a list for its JSON text)."""
    if not isinstance(value, dict):
        return value
    params: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, list):
            item = json.dumps(item)
        params[key] = item if isinstance(item, dict) else {"type": _infer_type(item), "default": item}
    return params


def _env_keys(value: dict[str, EnvParam]) -> dict[str, EnvParam]:
    for key in value:
        if not re.fullmatch(ENV_KEY_PATTERN, key):
            raise ValueError(f"{key!r} is not a parameter name (letters, digits, _ . -)")
    return value


# A role's or the app's parameters: a plain value is shorthand for {default: value}; names checked.
EnvParams = Annotated[dict[str, EnvParam], BeforeValidator(_env_shorthand), AfterValidator(_env_keys)]


class VerticalScaling(_Strict):
    """How a role's nodes are resized (``resize``): the bounds a request must keep to, and how
    many nodes change at once. Requests outside the bounds are refused before anything stops."""

    online: bool = Field(
        False,
        description="the app keeps running while its node is resized: on a provider that resizes "
        "online, nodes are not stopped (elsewhere they are, as always)",
    )
    max_in_flight: int = Field(1, ge=1, le=1000, description="nodes resized at once")
    min_cpu: int = Field(1, ge=1, le=128)
    max_cpu: int = Field(128, ge=1, le=128)
    min_memory: int = Field(128, ge=128, description="MiB")
    max_memory: int = Field(1024 * 1024, ge=128, description="MiB")
    max_volume_size: int = Field(65536, ge=1, le=65536, description="GiB")
    instance_types: list[str] = Field(
        default_factory=list, description="the instance types a resize may pick; empty: any"
    )

    @model_validator(mode="after")
    def _bounds_ordered(self) -> VerticalScaling:
        if self.min_cpu > self.max_cpu:
            raise ValueError("min_cpu is above max_cpu")
        if self.min_memory > self.max_memory:
            raise ValueError("min_memory is above max_memory")
        return self


class Role(_Strict):
    name: str = Field(pattern=ROLE_NAME_PATTERN)
    count: int = Field(1, ge=0, le=1000)
    count_range: list[int] | None = Field(
        None,
        min_length=1,
        description="the only node counts allowed (AppCenter's odd-only or fixed counts); absent: any",
    )
    scale_horizontal: bool = Field(True, description="false: scaling never changes this role's count")
    passphraseless: Literal["", "ssh-rsa", "ssh-dsa"] = Field(
        "",
        description="the role's nodes share a cluster key pair: private key in /root/.ssh, public key "
        "authorized on every node of the role and published as /self/host/pub_key",
    )
    image: str | dict[str, str] = Field(
        description="the image id, or one per provider: {qingcloud: img-..., aws: ami-...}"
    )
    cpu: int = Field(1, ge=1, le=128)
    memory: int = Field(1024, ge=128, description="MiB")
    volume: Volume | None = None
    services: dict[ServiceName, Service] = Field(default_factory=dict)
    health_check: HealthCheck | None = None
    env: EnvParams = Field(
        default_factory=dict, description="parameters; a plain value is shorthand for {default: value}"
    )
    templates: list[Template] = Field(default_factory=list, description="confd templates its nodes render")
    custom_services: dict[str, CustomService] = Field(
        default_factory=dict, description="operations run on request (POST /v1/clusters/<id>/service)"
    )
    # members: which nodes go first (docs/app-packages.md, "Ordering and targeting").
    ordering: str = Field(
        "",
        description="a command run on one node of the role that prints the role's node ids, one per "
        "line, in the order they should be processed (leader last): scale-in removes the first ones",
    )
    # metrics: numbers by name its nodes report (docs/app-packages.md, "Monitor items").
    monitor: Monitor | None = None
    # resize: a provider's instance type (QingCloud instance_class/type, EC2 type, Nova flavor);
    # empty: the cloud picks one from cpu and memory.
    instance_type: str = Field("", max_length=64, description="the provider's instance type or flavor name")
    vertical_scaling: VerticalScaling = Field(
        default_factory=lambda: VerticalScaling.model_validate({}),
        description="bounds and pace of a resize of the role's nodes",
    )

    @field_validator("image")
    @classmethod
    def _image_given(cls, value: str | dict[str, str]) -> str | dict[str, str]:
        images = value.values() if isinstance(value, dict) else [value]
        if not images or not all(images):
            raise ValueError("an image id, or a non-empty one for each provider named")
        return value

    @field_validator("templates")
    @classmethod
    def _templates_fit(cls, value: list[Template]) -> list[Template]:
        names = [t.name for t in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"template {twice[0]!r} appears twice")
        size = sum(len(t.text.encode()) for t in value)
        if size > TEMPLATES_MAX:
            raise ValueError(f"{size} bytes of template text; a role's templates fit in {TEMPLATES_MAX}")
        return value

    @field_validator("custom_services")
    @classmethod
    def _custom_names(cls, value: dict[str, CustomService]) -> dict[str, CustomService]:
        lifecycle = set(get_args(ServiceName))
        for name in value:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a service name (a-z first, then a-z, 0-9 and -, up to 31)")
            if name in lifecycle:
                raise ValueError(f"{name!r} is a lifecycle service: declare it under services")
        return value

    @field_validator("services")
    @classmethod
    def _pre_check_where_it_runs(cls, value: dict[str, Service]) -> dict[str, Service]:
        """Only scaling asks before it acts; a pre_check elsewhere would be silently ignored."""
        for name, service in value.items():
            if service.pre_check and name not in ("scale_out", "scale_in"):
                raise ValueError(f"{name}.pre_check: only scale_out and scale_in services have one")
        return value

    def image_for(self, provider: str) -> str:
        """The role's image on ``provider`` (SpecError naming the role when it has none there)."""
        if isinstance(self.image, str):
            return self.image
        if provider not in self.image:
            raise SpecError(
                f"roles.{self.name}.image: no image for provider {provider!r} "
                f"(have {', '.join(sorted(self.image))})"
            )
        return self.image[provider]

    def env_defaults(self) -> dict[str, str]:
        """The parameters that have a default, as the text agents see."""
        return {k: p.check(p.default) for k, p in self.env.items() if p.default is not None}


class Endpoint(_Strict):
    port: int | str = Field(
        description="the port (0: none fixed), or env.<key>: the value of that parameter (AppCenter's form)"
    )
    protocol: Literal["tcp", "udp", "http", "https"] = "tcp"

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | str) -> int | str:
        if isinstance(value, str):
            if not re.fullmatch(r"env\.[A-Za-z0-9_.-]{1,64}", value):
                raise ValueError(f"{value!r}: a port number or env.<parameter>")
        elif not 0 <= value <= 65535:
            raise ValueError(f"{value}: a port is 0 to 65535")
        return value


class DisplayTab(_Strict):
    """A table the console shows on request (AppCenter's display_tabs): cmd prints
    ``{"labels": [...], "data": [[...], ...]}`` on stdout, run on one node of the roles."""

    cmd: str = Field(min_length=1)
    roles: list[str] | None = Field(None, description="the roles it may run on; absent: any")
    timeout: int = Field(10, gt=0, le=3600, description="seconds")
    description: str = ""


class UpdatePolicy(_Strict):
    """How an env change rolls out: a canary batch first, then batches of ``max_in_flight``."""

    canary: int = Field(1, ge=0, le=1000, description="nodes changed first; 0 skips the canary batch")
    max_in_flight: int = Field(1, ge=1, le=1000, description="nodes changed at once after the canary")


RecoveryTrigger = Literal["heartbeat", "health"]


def _heartbeat_only() -> list[RecoveryTrigger]:
    return ["heartbeat"]


class AppRecovery(_Strict):
    """When pitrixd replaces an app's nodes by itself (a ``recover`` job); the daemon's
    ``--no-auto-recovery`` turns it off for every app whatever this says."""

    enabled: bool = Field(True, description="false: nodes are replaced only by an explicit recover")
    on: list[RecoveryTrigger] = Field(
        default_factory=_heartbeat_only,
        description="heartbeat: the agent went silent; health: the node stayed past its "
        "health_check.unhealthy_threshold for the recovery grace period",
    )

    @field_validator("on")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each trigger once")
        return value


class Upgrade(_Strict):
    """Which versions may upgrade to this one, and how (docs/app-packages.md, "Upgrades")."""

    from_versions: list[str] = Field(
        min_length=1,
        description="the versions (fnmatch globs allowed, e.g. 3.4.*) that may upgrade to this one",
    )
    policy: Literal["in_place", "replace"] = Field(
        "in_place",
        description="in_place: new templates and env delivered, then the upgrade service on each node; "
        "replace: each node rebuilt from the new image, its volume kept",
    )
    canary: int = Field(1, ge=0, le=1000, description="nodes upgraded first; 0 skips the canary batch")
    max_in_flight: int = Field(1, ge=1, le=1000, description="nodes upgraded at once after the canary")

    @field_validator("from_versions")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(r"[A-Za-z0-9._+*?\[\]!-]{1,64}", pattern):
                raise ValueError(f"{pattern!r} is not a version or a glob of versions")
        return value

    def allows(self, version: str) -> bool:
        """Whether a cluster on ``version`` may upgrade to the spec holding this."""
        from fnmatch import fnmatchcase

        return any(fnmatchcase(version, pattern) for pattern in self.from_versions)


class BackupHook(_Strict):
    """A command run on the nodes being backed up (or, ``restore``, on a restored cluster's nodes)."""

    cmd: str = Field(min_length=1, description="shell command, run with the VM root as working directory")
    timeout: int = Field(300, gt=0, le=86400, description="seconds")


class Backup(_Strict):
    """How the app is backed up (snapshots of its nodes' volumes) and restored into a new cluster.

    A backup runs, on the nodes whose volumes it takes: the ``backup`` command (an app-level dump
    into the volume, with its parameters), ``pre`` (flush, freeze), the snapshots, then ``post``
    (thaw; it always runs once ``pre`` ran). A restore makes the new cluster's volumes from the
    snapshots and runs ``restore`` on its nodes before their ``init``.
    """

    roles: list[str] | None = Field(
        None, description="roles whose volumes are snapshotted; default: every role with a volume"
    )
    nodes: Literal["all", "first"] = Field(
        "all",
        description="all: every node's volume; first: the first node's of each role only, and a "
        "restore makes every node of that role from it",
    )
    backup: CustomService | None = Field(
        None,
        description="run before the snapshots (e.g. a dump into the volume); params as a custom service's",
    )
    pre: BackupHook | None = Field(None, description="run just before the snapshots (flush, freeze)")
    post: BackupHook | None = Field(None, description="run after the snapshots whenever pre ran (thaw)")
    restore: BackupHook | None = Field(
        None, description="run on a restored cluster's nodes after their volumes are made, before init"
    )
    keep: int = Field(7, ge=1, le=1000, description="complete backups kept by a schedule's retention")


LINK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"


class LinkSpec(_Strict):
    """A link the app declares: a name its nodes read another cluster under (``/self/links/<name>``)."""

    app: str = Field("", description="the app the linked cluster must run (its name); empty: any app")
    required: bool = Field(False, description="a create must give it, and it cannot be removed")
    changeable: bool = Field(
        True, description="false: set at create only; POST .../links refuses to change it"
    )
    description: str = ""


RESERVED_IP_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,31}$"


class ReservedIp(_Strict):
    """An address of the cluster's network kept for the cluster (AppCenter's ``reserved_ips``, a
    VIP): allocated through the cloud at create, published at ``/cluster/endpoints/reserved_ips/
    <name>/value`` (AppCenter profile) or ``/cluster/reserved_ips/<name>/value``, released at
    delete. Announcing it on a node (keepalived) is the app's own work."""

    description: str = ""


class AppSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    version: str = "0.1.0"
    description: str = ""
    roles: list[Role] = Field(min_length=1)
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)
    update_policy: UpdatePolicy = Field(default_factory=lambda: UpdatePolicy.model_validate({}))
    # params: cluster-level parameters, seen by every role as /self/env/<key> (a role's own wins)
    env: EnvParams = Field(
        default_factory=dict,
        description="cluster-level parameters, seen by every role; a role's parameter of the same name wins",
    )
    recovery: AppRecovery = Field(default_factory=lambda: AppRecovery.model_validate({}))
    # upgrade: which versions may upgrade to this one (POST /v1/clusters/<id>/upgrade)
    upgrade: Upgrade | None = None
    # backup: snapshots of the nodes' volumes, restores into a new cluster (docs/app-packages.md)
    backup: Backup | None = None
    # links: declared links; with none declared any link name is taken (app-packages.md, "Links after create")
    links: dict[str, LinkSpec] = Field(
        default_factory=dict,
        description="declared links: name -> the app it must point at, required, changeable",
    )
    # profile: appcenter runs QingCloud AppCenter packages as they are (docs/appcenter.md)
    profile: Literal["native", "appcenter"] = Field(
        "native",
        description="appcenter: metadata in AppCenter's layout, its service order and semantics, "
        "agents with confd-yunify's comparisons and a plain-HTTP metadata address",
    )
    roleless: bool = Field(
        False,
        description="one role, published without a role name (/hosts/<instance id>), as AppCenter's "
        "role-less apps",
    )
    locale: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="language -> key -> message; err_code<N> explains a service's exit status N",
    )
    display_tabs: dict[str, DisplayTab] = Field(default_factory=dict, description="tables shown on request")
    reserved_ips: dict[str, ReservedIp] = Field(
        default_factory=dict,
        description="name -> an address of the cluster's network the cloud keeps for the cluster "
        "(a VIP), allocated at create and released at delete; the app binds it itself",
    )

    @field_validator("reserved_ips")
    @classmethod
    def _reserved_ip_names(cls, value: dict[str, ReservedIp]) -> dict[str, ReservedIp]:
        for name in value:
            if not re.fullmatch(RESERVED_IP_NAME, name):
                raise ValueError(f"{name!r} is not a reserved IP name (letters, digits, _ and -, up to 32)")
        return value

    @field_validator("links")
    @classmethod
    def _link_names(cls, value: dict[str, LinkSpec]) -> dict[str, LinkSpec]:
        for name in value:
            if not re.fullmatch(LINK_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a link name (lower case letters, digits, - and _)")
        return value

    @model_validator(mode="after")
    def _one_role_when_roleless(self) -> AppSpec:
        if self.roleless and len(self.roles) != 1:
            raise ValueError(f"roleless: a role-less app has exactly one role (has {len(self.roles)})")
        return self

    @model_validator(mode="after")
    def _counts_in_range(self) -> AppSpec:
        for role in self.roles:
            if role.count_range is not None and role.count not in role.count_range:
                allowed = ", ".join(str(n) for n in role.count_range)
                raise ValueError(f"roles.{role.name}.count: {role.count} is not one of {allowed}")
        return self

    @model_validator(mode="after")
    def _endpoint_ports_declared(self) -> AppSpec:
        declared = set(self.env) | {k for r in self.roles for k in r.env}
        for name, endpoint in self.endpoints.items():
            if isinstance(endpoint.port, str) and endpoint.port[4:] not in declared:
                raise ValueError(f"endpoints.{name}.port: no parameter named {endpoint.port[4:]!r}")
        return self

    @model_validator(mode="after")
    def _unique_roles(self) -> AppSpec:
        seen: set[str] = set()
        for role in self.roles:
            if role.name in seen:
                raise ValueError(f"role {role.name!r} appears twice")
            seen.add(role.name)
        return self

    @model_validator(mode="after")
    def _env_not_role_names(self) -> AppSpec:
        """Requests give role values as ``env.<role>.<key>`` and cluster-level ones as
        ``env.<key>``: a cluster-level key named like a role would make the two the same path."""
        for role in self.roles:
            if role.name in self.env:
                raise ValueError(f"env.{role.name}: a cluster-level parameter cannot have a role's name")
        return self

    @model_validator(mode="after")
    def _backup_roles(self) -> AppSpec:
        """A backup takes volumes: the roles it names exist and have one, and some role does."""
        if self.backup is None:
            return self
        with_volume = [r.name for r in self.roles if r.volume is not None]
        for name in self.backup.roles or []:
            if name not in {r.name for r in self.roles}:
                raise ValueError(f"backup.roles: no role named {name!r}")
            if name not in with_volume:
                raise ValueError(f"backup.roles: role {name!r} has no volume to snapshot")
        if not with_volume:
            raise ValueError("backup: no role has a volume to snapshot")
        return self

    def backup_roles(self) -> list[str]:
        """The roles a backup snapshots, in spec order."""
        if self.backup is None:
            return []
        named = self.backup.roles
        return [r.name for r in self.roles if r.volume is not None and (named is None or r.name in named)]

    def env_defaults(self) -> dict[str, str]:
        """The cluster-level parameters that have a default, as the text agents see."""
        return {k: p.check(p.default) for k, p in self.env.items() if p.default is not None}

    def role(self, name: str) -> Role:
        for role in self.roles:
            if role.name == name:
                return role
        raise SpecError(f"roles: no role named {name!r} (have {', '.join(r.name for r in self.roles)})")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        parts.append(describe(item, AppSpec, root="<spec>"))  # our words, with did-you-mean
    return "; ".join(parts)


def parse_spec(data: Any) -> AppSpec:
    """Validate a spec given as a mapping."""
    if not isinstance(data, dict):
        raise SpecError("<spec>: must be a mapping")
    try:
        return AppSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe(exc)) from None


def load_spec(path: Path) -> AppSpec:
    """Read a spec from a YAML or JSON file."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path} is not valid YAML: {exc}") from None
    return parse_spec(data)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of an app spec, as ``schemas/app-spec.json`` holds it."""
    schema = AppSpec.model_json_schema()
    # A plain value is shorthand for {default: value}: the schema accepts both, as the model does.
    shorthand = [{"type": t} for t in ("string", "integer", "number", "boolean")] + [{"type": "array"}]
    for env in (schema["$defs"]["Role"]["properties"]["env"], schema["properties"]["env"]):
        env["additionalProperties"] = {"anyOf": [{"$ref": "#/$defs/EnvParam"}, *shorthand]}
        env["propertyNames"] = {"pattern": ENV_KEY_PATTERN}
    service_params = schema["$defs"]["CustomService"]["properties"]["params"]
    service_params["additionalProperties"] = {"anyOf": [{"$ref": "#/$defs/EnvParam"}, *shorthand]}
    service_params["propertyNames"] = {"pattern": ENV_KEY_PATTERN}
    schema["$defs"]["Role"]["properties"]["custom_services"]["propertyNames"] = {"pattern": NAME_PATTERN}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://pitrix.dev/schemas/app-spec.json",
        **schema,
        "title": "pitrix application spec",
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
