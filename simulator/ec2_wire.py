"""EC2's Query wire format, read and written through botocore's own model of the API.

A request is a flat form (``Filter.1.Name=tag:Name``, ``InstanceId.1=i-...``); ``parse`` turns it
back into the nested parameters a boto3 caller passed, typed by the operation's input shape, and
refuses a parameter the operation does not have, as EC2 does (``UnknownParameter``). An answer is
the operation's output shape written as XML in EC2's namespace, so whatever botocore can parse from
a real EC2 it parses from here. The model is the contract both sides agree on: nothing about the
wire is guessed twice.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping
from typing import Any
from xml.etree import ElementTree

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape, StructureShape

API_VERSION = "2016-11-15"
NAMESPACE = f"http://ec2.amazonaws.com/doc/{API_VERSION}/"


class Ec2Error(Exception):
    """A refused call: EC2's code (``InvalidInstanceID.NotFound``), message and HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def load_model() -> ServiceModel:
    """EC2's service model as botocore ships it (loaded once per API object: it is large)."""
    return botocore.session.get_session().get_service_model("ec2")


def operation(model: ServiceModel, action: str) -> OperationModel:
    if action not in model.operation_names:
        raise Ec2Error("InvalidAction", f"The action {action} is not valid for this web service.")
    return model.operation_model(action)


def _query_name(shape: Shape, default: str) -> str:
    """The form key of a member, as botocore's EC2 serializer writes it."""
    if "queryName" in shape.serialization:
        return str(shape.serialization["queryName"])
    if "name" in shape.serialization:
        name = str(shape.serialization["name"])
        return name[0].upper() + name[1:]
    return default


def parse(form: Mapping[str, str], op: OperationModel) -> dict[str, Any]:
    """The operation's parameters from the form (``Action`` and ``Version`` aside)."""
    params = {k: v for k, v in form.items() if k not in ("Action", "Version")}
    shape = op.input_shape
    if shape is None:
        if params:
            raise Ec2Error("UnknownParameter", f"The parameter {next(iter(params))} is not recognized")
        return {}
    used: set[str] = set()
    value = _read_structure(params, shape, "", used)
    unknown = sorted(set(params) - used)
    if unknown:
        raise Ec2Error("UnknownParameter", f"The parameter {unknown[0]} is not recognized")
    return value


def _read(params: Mapping[str, str], shape: Shape, key: str, used: set[str]) -> Any:
    if isinstance(shape, StructureShape):
        return _read_structure(params, shape, key + ".", used)
    if shape.type_name == "list":
        return _read_list(params, shape, key, used)
    used.add(key)
    return _scalar(params[key], shape, key)


def _present(params: Mapping[str, str], key: str) -> bool:
    return key in params or any(k.startswith(key + ".") for k in params)


def _read_structure(params: Mapping[str, str], shape: StructureShape, prefix: str, used: set[str]) -> Any:
    found: dict[str, Any] = {}
    for name, member in shape.members.items():
        key = prefix + _query_name(member, name)
        if _present(params, key):
            found[name] = _read(params, member, key, used)
    return found


def _read_list(params: Mapping[str, str], shape: Shape, key: str, used: set[str]) -> list[Any]:
    if params.get(key) == "":  # botocore sends an empty list as an empty value
        used.add(key)
        return []
    member = shape.member
    items = []
    index = 1
    while _present(params, f"{key}.{index}"):
        items.append(_read(params, member, f"{key}.{index}", used))
        index += 1
    return items


def _scalar(text: str, shape: Shape, key: str) -> Any:
    kind = shape.type_name
    if kind in ("integer", "long"):
        if not re.fullmatch(r"-?[0-9]+", text):
            raise Ec2Error("InvalidParameterValue", f"Value ({text}) for parameter {key} is invalid.")
        return int(text)
    if kind == "boolean":
        if text not in ("true", "false"):
            raise Ec2Error("InvalidParameterValue", f"Value ({text}) for parameter {key} is invalid.")
        return text == "true"
    if kind == "blob":
        try:
            return base64.b64decode(text.encode(), validate=True)
        except (binascii.Error, ValueError):
            raise Ec2Error("InvalidParameterValue", f"Value for parameter {key} is not base64.") from None
    if kind in ("float", "double"):
        try:
            return float(text)
        except ValueError:
            raise Ec2Error(
                "InvalidParameterValue", f"Value ({text}) for parameter {key} is invalid."
            ) from None
    return text


def answer(op: OperationModel, result: Mapping[str, Any]) -> bytes:
    """``<ActionResponse xmlns=...><requestId/>...</ActionResponse>`` for the operation's output."""
    root = ElementTree.Element(f"{op.name}Response", xmlns=NAMESPACE)
    ElementTree.SubElement(root, "requestId").text = str(uuid.uuid4())
    if op.output_shape is not None:
        _Writer().structure(root, op.output_shape, result)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root)


class _Writer:
    """Writes values of the model's shapes as XML. botocore builds a new shape object at each
    look at a member, so each shape's layout is worked out once per answer and kept by its name
    (a thousand instances otherwise cost seconds)."""

    def __init__(self) -> None:
        self._members: dict[str, list[tuple[str, str, Shape]]] = {}
        self._items: dict[str, tuple[str, Shape]] = {}

    def structure(self, parent: ElementTree.Element, shape: StructureShape, value: Mapping[str, Any]) -> None:
        layout = self._members.get(shape.name)
        if layout is None:
            layout = [(n, str(m.serialization.get("name", n)), m) for n, m in shape.members.items()]
            self._members[shape.name] = layout
        for name, tag, member in layout:
            if name in value and value[name] is not None:
                self.write(ElementTree.SubElement(parent, tag), member, value[name])

    def write(self, element: ElementTree.Element, shape: Shape, value: Any) -> None:
        kind = shape.type_name
        if kind == "structure":
            self.structure(element, shape, value)
        elif kind == "list":
            item = self._items.get(shape.name)
            if item is None:
                member = shape.member
                item = (str(member.serialization.get("name", "member")), member)
                self._items[shape.name] = item
            tag, member = item
            for entry in value:
                self.write(ElementTree.SubElement(element, tag), member, entry)
        elif kind == "boolean":
            element.text = "true" if value else "false"
        elif kind == "blob":
            element.text = base64.b64encode(value).decode()
        else:
            element.text = str(value)


def error_body(error: Ec2Error) -> bytes:
    """EC2's error shape: ``<Response><Errors><Error><Code>`` and a ``RequestID``."""
    root = ElementTree.Element("Response")
    item = ElementTree.SubElement(ElementTree.SubElement(root, "Errors"), "Error")
    ElementTree.SubElement(item, "Code").text = error.code
    ElementTree.SubElement(item, "Message").text = error.message
    ElementTree.SubElement(root, "RequestID").text = str(uuid.uuid4())
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root)
