"""The app catalog: app packages (specs) by name and version, each owner's apart, kept in etcd.

An app's commands run on its clusters' VMs as root, so a name must never resolve to a spec that
someone other than the cluster's owner (or an admin) chose. Each owner registers into a namespace
of its own; an admin may publish an app to every owner. A lookup takes the owner's own app of
that name first, then a published one, never another owner's: another owner registering the same
name changes nothing for anyone else. A registered version never changes under a running cluster:
the same name and version again is accepted only with the identical spec (so scripts may re-run).

Layout: ``/catalog/owners/<owner>/<name>/<version>`` and ``/catalog/published/<name>/<version>``.
Records of the shared catalog before it (``/apps/<name>/<version>``) move at start into the
namespace of the owner that registered them: sharing them would keep any shadowing already planted.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from pitrix.logs import get_logger
from pitrix.runtime.lifecycle import LifecycleError
from pitrix.runtime.service import InvalidRequest, NotFound
from pitrix.runtime.spec import AppSpec, SpecError, parse_spec
from pitrix.sealing import REDACTED
from pitrix.store import Store
from pitrix.store.types import Compare, Op

VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
PREFIX = "/catalog/"
PUBLISHED_PREFIX = "/catalog/published/"
LEGACY_PREFIX = "/apps/"


class AppRecord(BaseModel):
    name: str
    version: str
    owner: str = Field(description="who registered it")
    published: bool = Field(False, description="published to every owner by an admin")
    registered: float = Field(default_factory=time.time)
    spec: AppSpec

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "owner": self.owner,
            "published": self.published,
            "registered": self.registered,
            "roles": [r.name for r in self.spec.roles],
        }

    def view(self) -> dict[str, Any]:
        """The record as the API shows it: a password parameter's default is masked, as every
        secret is in a view (the spec keeps it: a cluster made from it gets it, sealed)."""
        data = self.model_dump(mode="json")
        spec = data["spec"]
        declared = [spec.get("env") or {}, *((role.get("env") or {}) for role in spec["roles"])]
        for params in declared:  # the cluster-level parameters, then each role's
            for param in params.values():
                if param.get("type") == "password" and param.get("default") is not None:
                    param["default"] = REDACTED
        return data


def owner_prefix(owner: str) -> str:
    return f"{PREFIX}owners/{owner}/"


def app_prefix(name: str, owner: str | None) -> str:
    """Where the versions of ``name`` live: ``owner``'s namespace, or the published one (None)."""
    return f"{owner_prefix(owner) if owner is not None else PUBLISHED_PREFIX}{name}/"


class AppCatalog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.log = get_logger("pitrix.catalog")

    async def register(self, data: Any, owner: str, publish: bool = False) -> tuple[AppRecord, bool]:
        """Store the spec in ``owner``'s namespace (the published one with ``publish``, which the
        caller allows admins only); returns the record and whether it was new."""
        try:
            spec = parse_spec(data)
        except SpecError as exc:
            raise InvalidRequest(str(exc)) from None
        if not VERSION.match(spec.version):
            raise InvalidRequest("version: letters, digits and . _ + - only, at most 64 characters")
        record = AppRecord(name=spec.name, version=spec.version, owner=owner, published=publish, spec=spec)
        key = app_prefix(spec.name, None if publish else owner) + spec.version
        if await self.store.create(key, record.model_dump_json().encode()):
            return record, True
        kv = await self.store.get(key)
        existing = AppRecord.model_validate_json(kv.value) if kv is not None else None
        if existing is None or existing.spec != spec:
            where = "published" if publish else f"registered by {owner}"
            raise LifecycleError(
                f"app {spec.name} {spec.version} is {where} with another spec; register a new version"
            )
        return existing, False

    async def resolve(self, name: str, version: str | None, owner: str) -> AppRecord:
        """The app ``owner`` means by ``name`` (and ``version``): its own first, then a published one."""
        for scope in (owner, None):
            versions = await self._versions(name, scope)
            if version is None and versions:
                return versions[-1]
            chosen = [r for r in versions if r.version == version]
            if chosen:
                return chosen[0]
        if version is not None:
            raise NotFound(f"app {name!r} version {version!r} is not registered for {owner}")
        raise NotFound(f"app {name!r} is not registered for {owner} (nor published)")

    async def versions(self, record: AppRecord) -> list[str]:
        """The versions of ``record``'s app in its namespace, the most recently registered last."""
        return [
            r.version for r in await self._versions(record.name, None if record.published else record.owner)
        ]

    async def usable(self, owner: str) -> list[AppRecord]:
        """The newest version of every app ``owner`` can use: its own, then the published ones."""
        chosen: list[AppRecord] = []
        for prefix in (owner_prefix(owner), PUBLISHED_PREFIX):
            kvs, _ = await self.store.get_prefix(prefix)
            newest: dict[str, AppRecord] = {}
            for kv in kvs:
                record = AppRecord.model_validate_json(kv.value)
                if record.name not in newest or record.registered > newest[record.name].registered:
                    newest[record.name] = record
            chosen += sorted(newest.values(), key=lambda r: r.name)
        return chosen

    async def _versions(self, name: str, owner: str | None) -> list[AppRecord]:
        if "/" in name or not name:
            return []
        kvs, _ = await self.store.get_prefix(app_prefix(name, owner))
        records = [AppRecord.model_validate_json(kv.value) for kv in kvs]
        return sorted(records, key=lambda r: r.registered)

    async def migrate(self) -> int:
        """Move the shared catalog's records into their registrants' namespaces; returns how many.

        Each move is one transaction that also checks the old record is unchanged, so replicas
        starting together, or a start cut short, move each record once. A version registered
        again under the new layout meanwhile stays as it is; the old record then just goes.
        """
        kvs, _ = await self.store.get_prefix(LEGACY_PREFIX)
        moved = 0
        for kv in kvs:
            try:
                record = AppRecord.model_validate_json(kv.value)
            except ValidationError:
                self.log.warning("catalog.legacy_record_unreadable", key=kv.key)
                continue
            key = app_prefix(record.name, record.owner) + record.version
            unchanged = Compare(kv.key, "mod", "==", kv.mod_revision)
            result = await self.store.txn(
                [unchanged, Compare(key, "create", "==", 0)],
                [Op("put", key, record.model_dump_json().encode()), Op("delete", kv.key)],
            )
            if not result.succeeded:
                await self.store.txn([unchanged], [Op("delete", kv.key)])
            moved += result.succeeded
            self.log.info("catalog.migrated", app=record.name, version=record.version, owner=record.owner)
        return moved
