"""An AppCenter package (config.json, cluster.json.mustache, locale/*.json) as a pitrix app spec.

The cluster file is filled with the form's defaults (``mustache.fill``), then read field by field:
each one either maps onto the pitrix spec, is approximated (the note says how), or is dropped (the
note says why), so a packager sees exactly what will run. The spec has ``profile: appcenter``: the
runtime then serves metadata and runs services as AppCenter does (docs/appcenter.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pitrix.appcenter import params
from pitrix.appcenter.errors import PackageError
from pitrix.appcenter.fields import (
    BACKUP_SERVICES,
    DEFAULT_TIMEOUT,
    DROPPED_APP,
    DROPPED_NODE,
    ENDPOINT_FIELDS,
    HEALTH_FIELDS,
    LIFECYCLE,
    MAX_TIMEOUT,
    SERVICE_FIELDS,
    TAB_FIELDS,
    VOLUME_FIELDS,
)
from pitrix.appcenter.files import CLUSTER, CONFIG, LOCALE, read_dir
from pitrix.appcenter.form import FormField, read_form
from pitrix.appcenter.mustache import Filled, fill
from pitrix.appcenter.report import Conversion, ReportLine
from pitrix.runtime.catalog import VERSION
from pitrix.runtime.spec import (
    ENV_KEY_PATTERN,
    LINK_NAME_PATTERN,
    MONITOR_ITEM_PATTERN,
    MOUNT_POINT,
    NAME_PATTERN,
    RESERVED_IP_NAME,
    ROLE_NAME_PATTERN,
    SpecError,
    parse_spec,
)

__all__ = ["Conversion", "PackageError", "ReportLine", "import_dir", "import_package", "read_dir"]


def _slug(text: str, pattern: str, fallback: str, *, camel: bool = True) -> str:
    """``text`` made to fit ``pattern``: camelCase split (``camel``), lower case, other characters
    as '-'."""
    out = (re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", text) if camel else text).lower()
    out = re.sub(r"[^a-z0-9-]+", "-", out).strip("-")
    out = re.sub(r"-{2,}", "-", out)[:31].strip("-")
    if not re.fullmatch(pattern, out or "-"):
        out = f"{fallback}-{out}"[:31].strip("-") if out else fallback
    return out


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        return int(value)
    except ValueError:
        return default


def _strict(where: str, data: Any, allowed: set[str]) -> dict[str, Any]:
    """An object in a place where an unknown field means a mistaken package, not an extension."""
    if not isinstance(data, dict):
        raise PackageError(f"{CLUSTER}: {where}: an object")
    for key in data:
        if key not in allowed:
            raise PackageError(
                f"{CLUSTER}: {where}.{key}: unknown field (known: {', '.join(sorted(allowed))})"
            )
    return data


class _Importer:
    """One import: the form, the filled cluster file, and the conversion being built."""

    def __init__(self, form: dict[str, FormField], filled: Filled, images: dict[str, str]) -> None:
        self.form = form
        self.filled = filled
        self.images = images
        self.out = Conversion(spec={})

    def note(self, where: str, outcome: str, text: str = "") -> None:
        """One report line; the app-level health check or monitor every role takes, once."""
        line = ReportLine(where, outcome, text)  # type: ignore[arg-type]
        if line not in self.out.report:
            self.out.report.append(line)

    def field(self, *path: str | int) -> FormField | None:
        origin = self.filled.origin(*path)
        return self.form.get(origin) if origin else None

    # -- parameters ----------------------------------------------------------------------------

    def env(self, where: str, data: Any, path: tuple[str | int, ...]) -> dict[str, Any]:
        if not isinstance(data, dict):
            self.note(where, "dropped", "not an object")
            return {}
        out: dict[str, Any] = {}
        for key, value in data.items():
            at = f"{where}.{key}"
            if not re.fullmatch(ENV_KEY_PATTERN, key):
                self.note(at, "dropped", "a parameter name is letters, digits, _ . - (up to 64)")
                continue
            param, notes = params.convert(self.field(*path, key), value)
            out[key] = param
            self.note(at, "approximated" if notes else "mapped", "; ".join(notes))
        return out

    # -- services ------------------------------------------------------------------------------

    def service(self, where: str, name: str, data: dict[str, Any]) -> dict[str, Any] | None:
        cmd = data.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            self.note(where, "dropped", "no cmd")
            return None
        out: dict[str, Any] = {
            "cmd": cmd,
            "timeout": min(_int(data.get("timeout"), DEFAULT_TIMEOUT), MAX_TIMEOUT),
        }
        notes = [] if "timeout" in data else [f"timeout {DEFAULT_TIMEOUT} s (AppCenter's default)"]
        if "order" in data:
            out["order"] = max(0, _int(data["order"], 0))
        if data.get("nodes_to_execute_on") is not None:
            out["nodes_to_execute_on"] = max(1, _int(data["nodes_to_execute_on"], 1))
        if data.get("post_start_service"):
            if name == "init":
                out["post_start_service"] = True
            else:
                notes.append("post_start_service dropped (init only)")
        if data.get("post_stop_service"):
            notes.append("post_stop_service dropped: destroy runs before the node stops")
        if data.get("pre_check"):
            if name in ("scale_out", "scale_in"):
                out["pre_check"] = str(data["pre_check"])
            else:
                notes.append("pre_check dropped (scale_out and scale_in only)")
        if "allow_force" in data:
            if name == "destroy":
                out["allow_force"] = bool(data["allow_force"])
            else:
                notes.append("allow_force dropped (destroy only)")
        for key in ("event", "selector", "service_params"):
            if key in data:
                notes.append(f"{key} dropped")
        changed = [n for n in notes if not n.startswith("timeout")]
        self.note(where, "approximated" if changed else "mapped", "; ".join(notes))
        return out

    def custom_service(
        self, where: str, data: dict[str, Any], path: tuple[str | int, ...], renamed: str = ""
    ) -> dict[str, Any] | None:
        cmd = data.get("cmd")
        if not isinstance(cmd, str) or not cmd.strip():
            self.note(where, "dropped", "no cmd")
            return None
        out: dict[str, Any] = {
            "cmd": cmd,
            "params_style": "json_arg",
            "timeout": min(_int(data.get("timeout"), DEFAULT_TIMEOUT), MAX_TIMEOUT),
        }
        notes = ["parameters passed as one JSON argument"]
        if renamed:
            notes.insert(0, f"named {renamed} (pitrix service names are a-z, 0-9, -)")
        if "timeout" not in data:
            notes.append(f"timeout {DEFAULT_TIMEOUT} s (AppCenter's default)")
        if data.get("nodes_to_execute_on") is not None:
            out["nodes_to_execute_on"] = max(1, _int(data["nodes_to_execute_on"], 1))
        for key in ("order", "event", "selector", "pre_check", "allow_force", "post_start_service"):
            if key in data:
                notes.append(f"{key} dropped")
        service_params = data.get("service_params") or {}
        if isinstance(service_params, dict):
            taken: dict[str, Any] = {}
            for key, value in service_params.items():
                if not re.fullmatch(ENV_KEY_PATTERN, key):
                    notes.append(f"parameter {key!r} dropped (not a parameter name)")
                    continue
                param, param_notes = params.convert(
                    self.field(*path, "service_params", key), value, secret_default=False
                )
                taken[key] = param
                notes += [f"{key}: {n}" for n in param_notes]
            out["params"] = taken
        self.note(where, "approximated" if renamed else "mapped", "; ".join(notes))
        return out

    # -- roles ---------------------------------------------------------------------------------

    def role_name(self, node: dict[str, Any], index: int, count_origin: str | None) -> tuple[str, bool]:
        """The role's name and whether the package named it (false: a role-less package)."""
        given = node.get("role")
        if isinstance(given, str) and given:
            if re.fullmatch(ROLE_NAME_PATTERN, given):
                self.note(f"nodes.{given}.role", "mapped")
                return given, True
            name = _slug(given, ROLE_NAME_PATTERN, "role").replace("-", "_")
            self.note(f"nodes.{given}.role", "approximated", f"named {name} (lower case, a-z first)")
            return name, True
        # Role-less: the form usually still has a group for its nodes (cluster.zk_node.count).
        name = "node"
        if count_origin and count_origin.startswith("cluster.") and count_origin.count(".") >= 2:
            candidate = count_origin.split(".")[1]
            if re.fullmatch(ROLE_NAME_PATTERN, candidate):
                name = candidate
        self.note(
            f"nodes.{index}.role", "approximated", f"role-less package: one role named {name}, roleless: true"
        )
        return name, False

    def count(self, role: dict[str, Any], where: str, node: dict[str, Any], index: int) -> None:
        role["count"] = max(0, _int(node.get("count"), 1))
        form = self.field("nodes", index, "count")
        if form is None:
            self.note(f"{where}.count", "mapped")
            return
        allowed: list[int] | None = None
        spec = form.spec
        if isinstance(spec.get("range"), list) and all(isinstance(v, int) for v in spec["range"]):
            allowed = sorted({int(v) for v in spec["range"]})
        elif (
            isinstance(spec.get("min"), int)
            and isinstance(spec.get("max"), int)
            and 0 <= spec["max"] - spec["min"] <= 200
        ):
            allowed = list(range(max(0, spec["min"]), spec["max"] + 1))
        if allowed and role["count"] in allowed and len(allowed) <= 1000:
            role["count_range"] = allowed
            self.note(
                f"{where}.count", "mapped", f"count_range {allowed[0]}..{allowed[-1]} ({len(allowed)} counts)"
            )
        elif allowed:
            self.note(
                f"{where}.count", "approximated", "its range does not hold the default count: not enforced"
            )
        else:
            self.note(f"{where}.count", "mapped")

    def volume(self, where: str, data: Any) -> dict[str, Any] | None:
        data = _strict(where, data, VOLUME_FIELDS)
        size = _int(data.get("size"), 0)
        if size < 1:
            self.note(where, "dropped", "no size (or 0): no volume")
            return None
        out: dict[str, Any] = {"size": min(size, 65536)}
        notes: list[str] = []
        mount = data.get("mount_point", "/data")
        if isinstance(mount, list):
            if len(mount) > 1:
                notes.append(f"one volume at {mount[0]} instead of {len(mount)}")
            mount = mount[0] if mount else "/data"
        mount = str(mount).rstrip("/") or "/data"
        if re.fullmatch(MOUNT_POINT, mount):
            out["mount_point"] = mount
        else:
            notes.append(f"mount point {mount!r} not allowed here: /data")
        fs = data.get("filesystem", "ext4")
        if fs in ("ext4", "xfs"):
            out["filesystem"] = fs
        else:
            notes.append(f"filesystem {fs!r} as ext4")
        options = data.get("mount_options")
        if isinstance(options, str) and re.fullmatch(r"[A-Za-z0-9_=,.:+-]*", options):
            out["mount_options"] = options
        elif options:
            notes.append("mount_options dropped")
        if "class" in data:
            notes.append("class (QingCloud volume type) dropped")
        self.note(where, "approximated" if notes else "mapped", "; ".join(notes))
        return out

    def health(self, where: str, data: Any) -> dict[str, Any] | None:
        data = _strict(where, data, HEALTH_FIELDS)
        if data.get("enable") is not True or not data.get("check_cmd"):  # AppCenter: off unless enabled
            self.note(where, "dropped", "no check_cmd" if data.get("enable") is True else "not enabled")
            return None
        out: dict[str, Any] = {"cmd": str(data["check_cmd"])}
        interval = min(max(_int(data.get("interval_sec"), 60), 1), 86400)
        out["interval"] = interval
        out["timeout"] = min(max(_int(data.get("timeout_sec"), 10), 1), 3600)
        out["unhealthy_threshold"] = min(max(_int(data.get("unhealthy_threshold"), 3), 1), 100)
        if data.get("action_cmd"):
            out["action_cmd"] = str(data["action_cmd"])
            out["action_timeout"] = min(max(_int(data.get("action_timeout_sec"), 30), 1), 3600)
        note = "healthy_threshold dropped (one success is healthy)" if "healthy_threshold" in data else ""
        self.note(where, "approximated" if note else "mapped", note)
        return out

    def monitor(self, where: str, data: Any) -> dict[str, Any] | None:
        if not isinstance(data, dict) or data.get("enable") is not True or not data.get("cmd"):
            self.note(where, "dropped", "not enabled or no cmd")
            return None
        items: dict[str, Any] = {}
        skipped: list[str] = []
        for name, item in (data.get("items") or {}).items():
            item = item if isinstance(item, dict) else {}
            if (
                item.get("value_type") == "str"
                or not re.fullmatch(MONITOR_ITEM_PATTERN, name)
                or len(items) >= 64
            ):
                skipped.append(name)
                continue
            unit = str(item.get("unit", ""))
            items[name] = {"unit": unit} if re.fullmatch(r"[A-Za-z0-9_%/.-]{0,32}", unit) else {}
        if not items:
            self.note(where, "dropped", "no numeric items")
            return None
        notes = ["items as gauges; groups, display, alarm dropped"]
        if skipped:
            notes.append(f"items not numbers or not names dropped: {', '.join(skipped)}")
        self.note(where, "approximated", "; ".join(notes))
        return {"cmd": str(data["cmd"]), "items": items}

    def role(self, index: int, node: Any, app: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if not isinstance(node, dict):
            raise PackageError(f"{CLUSTER}: nodes.{index}: an object")
        name, named = self.role_name(node, index, self.filled.origin("nodes", index, "count"))
        where = f"nodes.{name}"
        role: dict[str, Any] = {"name": name}
        container = node.get("container") or {}
        image = (
            self.images.get(name)
            or self.images.get("*")
            or (container.get("image") if isinstance(container, dict) else None)
        )
        if not image:
            raise PackageError(
                f"{CLUSTER}: nodes.{index}.container.image: no image (give one with --image {name}=ID)"
            )
        role["image"] = str(image)
        overridden = name in self.images or "*" in self.images
        kind = container.get("type", "kvm") if isinstance(container, dict) else "kvm"
        self.note(
            f"{where}.container",
            "mapped" if kind == "kvm" and not overridden else "approximated",
            ("image given at import" if overridden else "")
            + (f"; container type {kind} run as a VM image" if kind != "kvm" else ""),
        )
        self.count(role, where, node, index)
        for key, low, high in (("cpu", 1, 128), ("memory", 128, 1024 * 1024)):
            if key in node:
                value = _int(node[key], low)
                role[key] = min(max(value, low), high)
                self.note(f"{where}.{key}", "mapped" if value == role[key] else "approximated")
        if node.get("volume"):
            volume = self.volume(f"{where}.volume", node["volume"])
            if volume:
                role["volume"] = volume
        if node.get("passphraseless") in ("ssh-rsa", "ssh-dsa"):
            role["passphraseless"] = node["passphraseless"]
            self.note(f"{where}.passphraseless", "mapped")
        policy = node.get("vertical_scaling_policy")
        if policy is not None:
            role["vertical_scaling"] = {"max_in_flight": 1 if policy == "sequential" else 1000}
            self.note(
                f"{where}.vertical_scaling_policy",
                "mapped",
                "max_in_flight 1 (sequential) or 1000 (parallel)",
            )
        actions = node.get("advanced_actions", app.get("advanced_actions"))
        role["scale_horizontal"] = isinstance(actions, list) and "scale_horizontal" in actions
        if "advanced_actions" in node:
            self.note(
                f"{where}.advanced_actions", "approximated", "scale_horizontal kept, other actions dropped"
            )
        self.services(role, where, node.get("services") or {}, ("nodes", index, "services"))
        health = node.get("health_check", app.get("health_check"))
        if health:
            checked = self.health(
                f"{where}.health_check" if "health_check" in node else "health_check", health
            )
            if checked:
                role["health_check"] = checked
        monitor = node.get("monitor", app.get("monitor"))
        if monitor:
            shown = self.monitor(f"{where}.monitor" if "monitor" in node else "monitor", monitor)
            if shown:
                role["monitor"] = shown
        if "env" in node:
            role["env"] = self.env(f"{where}.env", node["env"], ("nodes", index, "env"))
        for key, why in DROPPED_NODE.items():
            if key in node:
                self.note(f"{where}.{key}", "dropped", why)
        known = {"role", "container", "count", "cpu", "memory", "volume", "passphraseless", "services"}
        known |= {"vertical_scaling_policy", "advanced_actions", "health_check", "monitor", "env"}
        for key in node:
            if key not in known and key not in DROPPED_NODE:
                self.note(f"{where}.{key}", "dropped", "not a field the importer knows")
        return role, named

    def services(self, role: dict[str, Any], where: str, data: Any, path: tuple[str | int, ...]) -> None:
        if not isinstance(data, dict):
            raise PackageError(f"{CLUSTER}: {'.'.join(map(str, path))}: an object")
        services: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        for name, service in data.items():
            at = f"{where}.services.{name}"
            service = _strict(f"{'.'.join(map(str, path))}.{name}", service, SERVICE_FIELDS)
            if service.get("type") == "custom":
                cname = name if re.fullmatch(NAME_PATTERN, name) else _slug(name, NAME_PATTERN, "svc")
                converted = self.custom_service(at, service, (*path, name), cname if cname != name else "")
                if converted:
                    custom[cname] = converted
            elif name in LIFECYCLE:
                converted = self.service(at, name, service)
                if converted:
                    services[name] = converted
            elif name == "get_nodes_order" and service.get("cmd"):
                role["ordering"] = str(service["cmd"])
                self.note(at, "approximated", "the role's ordering command (node ids it prints, in order)")
            elif name in BACKUP_SERVICES:
                self.backups.setdefault(name, (at, service))
            else:
                self.note(at, "dropped", "no pitrix counterpart")
        if services:
            role["services"] = services
        if custom:
            role["custom_services"] = custom

    backups: dict[str, tuple[str, dict[str, Any]]]

    # -- the app -------------------------------------------------------------------------------

    def app(self, name: str | None, version: str, locale: dict[str, dict[str, str]]) -> Conversion:
        data = self.filled.data
        self.backups = {}
        spec: dict[str, Any] = {"profile": "appcenter", "version": version}
        cluster_name = data.get("name")
        if name:
            spec["name"] = name
            self.note("name", "mapped", "the name given at import")
        else:
            spec["name"] = _slug(str(cluster_name or "app"), NAME_PATTERN, "app", camel=False)
            self.note(
                "name", "approximated", f"app name {spec['name']} (from the form's default cluster name)"
            )
        if data.get("description"):
            spec["description"] = str(data["description"])
            self.note("description", "mapped")
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            raise PackageError(f"{CLUSTER}: nodes: a list of at least one node group")
        roles = []
        named_any = False
        for index, node in enumerate(nodes):
            role, named = self.role(index, node, data)
            roles.append(role)
            named_any = named_any or named
        if len(nodes) == 1 and not named_any:
            spec["roleless"] = True
        elif not all("role" in n for n in nodes if isinstance(n, dict)):
            raise PackageError(f"{CLUSTER}: nodes: with several node groups each has a role")
        spec["roles"] = roles
        if "env" in data:
            spec["env"] = self.env("env", data["env"], ("env",))
            for role in roles:  # a role's name cannot be a cluster-level key (env.<role>.<key> paths)
                if role["name"] in spec["env"]:
                    del spec["env"][role["name"]]
                    self.note(f"env.{role['name']}", "dropped", "a cluster-level parameter named like a role")
        self.endpoints(spec, data.get("endpoints"))
        self.links(spec, data.get("links"))
        self.backup(spec, data)
        self.tabs(spec, data.get("display_tabs"))
        if "advanced_actions" in data:
            self.note(
                "advanced_actions",
                "approximated",
                "scale_horizontal: roles may scale (scale_horizontal false otherwise); other actions dropped",
            )
        for key, why in DROPPED_APP.items():
            if key in data:
                self.note(key, "dropped", why)
        known = {
            "name",
            "description",
            "nodes",
            "env",
            "endpoints",
            "links",
            "display_tabs",
            "advanced_actions",
        }
        known |= {"health_check", "monitor", "backup_policy"} | set(DROPPED_APP)
        for key in data:
            if key not in known:
                self.note(key, "dropped", "not a field the importer knows")
        for placeholder in self.filled.inline:
            if placeholder not in self.filled.unknown:
                self.note(
                    f"{{{{{placeholder}}}}}",
                    "approximated",
                    "inside a string: its default written in at import (AppCenter writes the value "
                    "given at create)",
                )
        for placeholder in self.filled.unknown:
            self.note(
                f"{{{{{placeholder}}}}}", "dropped", "no config.json field of that path: filled with null"
            )
        if locale:
            spec["locale"] = locale
            self.note("locale", "mapped", f"languages {', '.join(sorted(locale))}")
        self.out.spec = spec
        return self.out

    def endpoints(self, spec: dict[str, Any], data: Any) -> None:
        if not isinstance(data, dict):
            return
        declared = set(spec.get("env", {})) | {k for r in spec["roles"] for k in r.get("env", {})}
        out: dict[str, Any] = {}
        for name, endpoint in data.items():
            where = f"endpoints.{name}"
            if name == "reserved_ips":
                self.reserved_ips(spec, endpoint)
                continue
            endpoint = _strict(where, endpoint, ENDPOINT_FIELDS)
            port = endpoint.get("port", 0)
            notes: list[str] = []
            if isinstance(port, str) and port.startswith("env."):
                if port[4:] not in declared:
                    key = port.split(".env.", 1)[-1] if ".env." in port else port[4:]
                    if key in declared:
                        notes.append(f"{port} read as env.{key}")
                        port = f"env.{key}"
                    else:
                        notes.append(f"{port}: no such parameter; port 0 (none fixed)")
                        port = 0
            elif isinstance(port, str) and ".env." in port and port.split(".env.", 1)[1] in declared:
                notes.append(f"{port} read as env.{port.split('.env.', 1)[1]}")
                port = f"env.{port.split('.env.', 1)[1]}"
            else:
                number = _int(port, -1)
                if not 0 <= number <= 65535:
                    notes.append(f"port {port!r} is not a port: 0 (none fixed)")
                    number = 0
                port = number
            protocol = str(endpoint.get("protocol", "tcp")).lower()
            if protocol not in ("tcp", "udp", "http", "https"):
                notes.append(f"protocol {protocol} as tcp")
                protocol = "tcp"
            out[name] = {"port": port, "protocol": protocol}
            self.note(where, "approximated" if notes else "mapped", "; ".join(notes))
        if out:
            spec["endpoints"] = out

    def reserved_ips(self, spec: dict[str, Any], data: Any) -> None:
        """``endpoints.reserved_ips``: name -> {value: ""}, an address AppCenter reserves per name
        (a VIP); pitrix reserves it through the cloud and publishes it where the package reads it."""
        if not isinstance(data, dict):
            self.note("endpoints.reserved_ips", "dropped", "not a mapping of names")
            return
        out: dict[str, Any] = {}
        for name in data:
            where = f"endpoints.reserved_ips.{name}"
            if not re.fullmatch(RESERVED_IP_NAME, name):
                self.note(where, "dropped", "not a reserved IP name (letters, digits, _ and -, up to 32)")
                continue
            out[name] = {}
            self.note(
                where,
                "mapped",
                "reserved_ips: an address of the cluster's network reserved through the cloud at "
                "create (/cluster/endpoints/reserved_ips/<name>/value), released at delete",
            )
        if out:
            spec["reserved_ips"] = out

    def links(self, spec: dict[str, Any], data: Any) -> None:
        if not isinstance(data, dict):
            return
        out: dict[str, Any] = {}
        for name in data:
            where = f"links.{name}"
            if not re.fullmatch(LINK_NAME_PATTERN, name):
                self.note(where, "dropped", "not a link name (lower case letters, digits, - and _)")
                continue
            form = self.field("links", name)
            link: dict[str, Any] = {}
            if form is not None:
                link["required"] = params._yes(form.spec.get("required"))
                if form.spec.get("description") or form.spec.get("label"):
                    link["description"] = str(form.spec.get("description") or form.spec.get("label"))
            out[name] = link
            self.note(where, "approximated", "any app may be linked (limits name QingCloud app ids)")
        if out:
            spec["links"] = out

    def backup(self, spec: dict[str, Any], data: dict[str, Any]) -> None:
        policy = data.get("backup_policy")
        with_volume = [r["name"] for r in spec["roles"] if "volume" in r]
        if policy is None and not self.backups:
            return
        if policy != "device" or not with_volume:
            why = (
                "no role has a volume"
                if not with_volume
                else f"backup_policy {policy!r}: only device is modeled"
            )
            self.note("backup_policy", "dropped", why)
            for at, _ in self.backups.values():
                self.note(at, "dropped", why)
            return
        backup: dict[str, Any] = {}
        self.note("backup_policy", "mapped", "volume snapshots of " + ", ".join(with_volume))
        if "backup" in self.backups:
            at, service = self.backups["backup"]
            if service.get("cmd"):
                backup["backup"] = {
                    "cmd": str(service["cmd"]),
                    "params_style": "json_arg",
                    "timeout": min(_int(service.get("timeout"), DEFAULT_TIMEOUT), MAX_TIMEOUT),
                }
            dropped = "; selector dropped" if "selector" in service else ""
            self.note(at, "approximated", f"run before the snapshots on every node backed up{dropped}")
        if "restore" in self.backups:
            at, service = self.backups["restore"]
            if service.get("cmd"):
                backup["restore"] = {
                    "cmd": str(service["cmd"]),
                    "timeout": min(_int(service.get("timeout"), DEFAULT_TIMEOUT), MAX_TIMEOUT),
                }
            self.note(at, "approximated", "run on the restored cluster's nodes before init")
        if "delete_snapshot" in self.backups:
            self.note(self.backups["delete_snapshot"][0], "dropped", "pitrix deletes snapshots itself")
        spec["backup"] = backup

    def tabs(self, spec: dict[str, Any], data: Any) -> None:
        if not isinstance(data, dict):
            return
        roles = {r["name"] for r in spec["roles"]}
        out: dict[str, Any] = {}
        for name, tab in data.items():
            where = f"display_tabs.{name}"
            tab = _strict(where, tab, TAB_FIELDS)
            if not tab.get("cmd"):
                self.note(where, "dropped", "no cmd")
                continue
            item: dict[str, Any] = {
                "cmd": str(tab["cmd"]),
                "timeout": min(max(_int(tab.get("timeout"), 10), 1), 3600),
            }
            if tab.get("description"):
                item["description"] = str(tab["description"])
            on = tab.get("roles_to_execute_on")
            if isinstance(on, list) and on:
                item["roles"] = [str(r) for r in on if str(r) in roles] or None
                if item["roles"] is None:
                    del item["roles"]
            out[name] = item
            self.note(where, "mapped")
        if out:
            spec["display_tabs"] = out


def _locale(files: dict[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for path, text in sorted(files.items()):
        match = LOCALE.match(path)
        if not match:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PackageError(f"{path}: not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise PackageError(f"{path}: an object of key -> message")
        out[match.group(1)] = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
    return out


def import_package(
    files: dict[str, str],
    *,
    images: dict[str, str] | None = None,
    name: str | None = None,
    version: str = "1.0.0",
) -> Conversion:
    """``files`` (relative path -> text: config.json, cluster.json.mustache, locale/<lang>.json)
    as a pitrix spec with ``profile: appcenter`` and the report of every field. ``images`` maps a
    role name (or "*") to the image id used instead of the package's. PackageError names the file
    and field of a package that cannot be imported."""
    for required in (CONFIG, CLUSTER):
        if required not in files:
            raise PackageError(f"{required}: missing from the package")
    if not VERSION.match(version):
        raise PackageError(f"version: {version!r} is not a version (letters, digits and . _ + -, up to 64)")
    if name is not None and not re.fullmatch(NAME_PATTERN, name):
        raise PackageError(f"name: {name!r} is not an app name (a-z first, then a-z, 0-9 and -, up to 31)")
    try:
        form = read_form(files[CONFIG])
        filled = fill(files[CLUSTER], form)
        conversion = _Importer(form, filled, dict(images or {})).app(name, version, _locale(files))
    except RecursionError:
        raise PackageError(f"{CLUSTER}: nested too deep") from None
    roles = [r["name"] for r in conversion.spec["roles"]]
    for role in images or {}:
        if role != "*" and role not in roles:
            raise PackageError(f"images.{role}: the package has no role {role!r} (has {', '.join(roles)})")
    for path in files:
        if path not in (CONFIG, CLUSTER) and not LOCALE.match(path):
            conversion.add(path, "dropped", "not read by the importer")
    try:
        parse_spec(conversion.spec)
    except SpecError as exc:
        raise PackageError(f"{CLUSTER}: the converted spec is refused: {exc}") from None
    return conversion


def import_dir(
    path: Path, *, images: dict[str, str] | None = None, name: str | None = None, version: str = "1.0.0"
) -> Conversion:
    """``import_package`` over a package directory (config.json, cluster.json.mustache, locale/)."""
    return import_package(read_dir(path), images=images, name=name, version=version)
