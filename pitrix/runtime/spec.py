"""The application spec: what an app package says about its roles, services and parameters.

Minimal for now (roles, count, image, size, services, env, endpoints) and shaped like OpenPitrix's
cluster spec so it can grow into the full JSON Schema without breaking existing specs. Validation
errors name the field (``roles.web.services.start.cmd: field required``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ServiceName = Literal["init", "start", "stop", "restart", "scale_out", "scale_in", "destroy"]
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"


class SpecError(ValueError):
    """An app spec failed validation; the message names each offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Service(_Strict):
    cmd: str = Field(min_length=1)
    order: int = Field(
        0, ge=0, description="roles run a service in ascending order; same order runs together"
    )
    timeout: int = Field(300, gt=0, le=86400)


class Role(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    count: int = Field(1, ge=0, le=1000)
    image: str = Field(min_length=1)
    cpu: int = Field(1, ge=1, le=128)
    memory: int = Field(1024, ge=128, description="MiB")
    services: dict[ServiceName, Service] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_strings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
        return value


class Endpoint(_Strict):
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp", "http", "https"] = "tcp"


class AppSpec(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    version: str = "0.1.0"
    roles: list[Role] = Field(min_length=1)
    endpoints: dict[str, Endpoint] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_roles(self) -> AppSpec:
        seen: set[str] = set()
        for role in self.roles:
            if role.name in seen:
                raise ValueError(f"role {role.name!r} appears twice")
            seen.add(role.name)
        return self

    def role(self, name: str) -> Role:
        for role in self.roles:
            if role.name == name:
                return role
        raise SpecError(f"roles: no role named {name!r} (have {', '.join(r.name for r in self.roles)})")


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"] if p != "[key]") or "<spec>"
        parts.append(f"{loc}: {item['msg']}")
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
