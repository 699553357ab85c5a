"""The app catalog: registered app packages (specs) by name and version, kept in etcd.

A registered version never changes under a running cluster: registering the same name and version
again is accepted only with the identical spec (so scripts may re-run), otherwise it is a conflict.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, Field

from pitrix.runtime.machine import LifecycleError
from pitrix.runtime.service import InvalidRequest, NotFound
from pitrix.runtime.spec import AppSpec, SpecError, parse_spec
from pitrix.store import Store

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


class AppRecord(BaseModel):
    name: str
    version: str
    owner: str
    registered: float = Field(default_factory=time.time)
    spec: AppSpec

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "owner": self.owner,
            "registered": self.registered,
            "roles": [r.name for r in self.spec.roles],
        }


def app_key(name: str, version: str) -> str:
    return f"/apps/{name}/{version}"


class AppCatalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def register(self, data: Any, owner: str) -> tuple[AppRecord, bool]:
        """Store the spec; returns the record and whether it was new."""
        try:
            spec = parse_spec(data)
        except SpecError as exc:
            raise InvalidRequest(str(exc)) from None
        if not VERSION.match(spec.version):
            raise InvalidRequest("version: letters, digits and . _ + - only, at most 64 characters")
        key = app_key(spec.name, spec.version)
        record = AppRecord(name=spec.name, version=spec.version, owner=owner, spec=spec)
        if await self.store.create(key, record.model_dump_json().encode()):
            return record, True
        existing = await self.get(spec.name, spec.version)
        if existing.spec != spec:
            raise LifecycleError(
                f"app {spec.name} {spec.version} is registered with another spec; register a new version"
            )
        return existing, False

    async def get(self, name: str, version: str | None = None) -> AppRecord:
        if version is not None:
            kv = await self.store.get(app_key(name, version))
            if kv is None:
                raise NotFound(f"app {name!r} version {version!r} is not registered")
            return AppRecord.model_validate_json(kv.value)
        versions = await self.versions(name)
        if not versions:
            raise NotFound(f"app {name!r} is not registered")
        return versions[-1]

    async def versions(self, name: str) -> list[AppRecord]:
        """Every version of ``name``, the most recently registered last."""
        if "/" in name:
            return []
        kvs, _ = await self.store.get_prefix(f"/apps/{name}/")
        records = [AppRecord.model_validate_json(kv.value) for kv in kvs]
        return sorted(records, key=lambda r: r.registered)

    async def latest(self) -> list[AppRecord]:
        """The most recently registered version of every app, by name."""
        kvs, _ = await self.store.get_prefix("/apps/")
        newest: dict[str, AppRecord] = {}
        for kv in kvs:
            record = AppRecord.model_validate_json(kv.value)
            if record.name not in newest or record.registered > newest[record.name].registered:
                newest[record.name] = record
        return sorted(newest.values(), key=lambda r: r.name)
