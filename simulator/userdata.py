"""QingCloud's three kinds of userdata, as RunInstances takes them and an image acts on them.

``plain`` is data: written to ``userdata.string`` in the userdata directory (``userdata_path``,
default ``/etc/qingcloud/userdata``) and never run. ``exec`` is a script: written to
``userdata_file`` (default ``/etc/rc.local``), which the image runs at boot as it runs rc.local.
``tar`` is an archive uploaded first (UploadUserDataAttachment) and unpacked from the VM's root, so
an ``etc/rc.local`` inside it is what boot runs. Limits are QingCloud's: 4 KiB for the base64
value of ``plain`` and ``exec``, 2 MiB for an attachment before encoding.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import posixpath
import secrets
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from simulator.errors import NOT_FOUND, ApiError, invalid

KINDS = ("plain", "exec", "tar")
DATA_DIR = "etc/qingcloud/userdata"  # relative to the VM's root, as every path here
EXEC_FILE = "etc/rc.local"
STRING_FILE = "userdata.string"
VALUE_LIMIT = 4096  # characters of a plain or exec userdata_value (base64)
ATTACHMENT_LIMIT = 2 * 1024 * 1024  # bytes of an archive before base64
REQUEST_LIMIT = 4 * 1024 * 1024  # bytes of a request body the API takes: an attachment in base64 fits


def _inside(path: str) -> str | None:
    """``path`` (absolute, as the API takes it) relative to the VM's root; None if it is not a
    plain absolute path inside it."""
    if not path.startswith("/") or "\0" in path or ".." in path.split("/"):
        return None
    norm = posixpath.normpath(path)
    if norm == "/":
        return None
    return norm.lstrip("/")


def _archive_members(data: bytes) -> list[tuple[str, bytes | None, int]]:
    """(relative path, content or None for a directory, mode) of a zip/tar/tgz/tbz archive; raises
    ValueError for anything else, and for a member that is a link or leaves the root."""
    members: list[tuple[str, bytes | None, int]] = []
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for entry in archive.infolist():
                name = _inside("/" + entry.filename)
                if name is None:
                    raise ValueError(f"member {entry.filename!r} leaves the root")
                mode = (entry.external_attr >> 16) & 0o7777 or (0o755 if entry.is_dir() else 0o644)
                members.append((name, None if entry.is_dir() else archive.read(entry), mode))
        return members
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
            for info in archive.getmembers():
                members.extend(_tar_member(archive, info))
    except tarfile.TarError as exc:
        raise ValueError(f"not a zip, tar, tgz or tbz archive ({exc})") from None
    return members


def _tar_member(archive: tarfile.TarFile, info: tarfile.TarInfo) -> list[tuple[str, bytes | None, int]]:
    if info.name.strip("./") == "":
        return []  # the archive's own top directory
    name = _inside("/" + info.name)
    if name is None:
        raise ValueError(f"member {info.name!r} leaves the root")
    if info.isdir():
        return [(name, None, info.mode & 0o7777)]
    if not info.isfile():
        raise ValueError(f"member {info.name!r} is a link or device, which is not unpacked")
    extracted = archive.extractfile(info)
    assert extracted is not None
    return [(name, extracted.read(), info.mode & 0o7777)]


@dataclass
class Attachments:
    """Archives uploaded by UploadUserDataAttachment, by ``attachment_id`` (``uda-...``)."""

    _stored: dict[str, bytes] = field(default_factory=dict)

    def upload(self, params: Mapping[str, str]) -> str:
        raw = params.get("attachment_content", "")
        if not raw:
            raise invalid("parameter [attachment_content] should not be empty")
        try:
            data = base64.b64decode(raw.encode(), validate=True)
        except (binascii.Error, ValueError):
            raise invalid("parameter [attachment_content] should be base64 encoded") from None
        if len(data) > ATTACHMENT_LIMIT:
            raise invalid(f"parameter [attachment_content] is larger than {ATTACHMENT_LIMIT} bytes")
        try:
            _archive_members(data)
        except ValueError as exc:
            raise invalid(f"parameter [attachment_content] is not a usable archive: {exc}") from None
        attachment_id = "uda-" + secrets.token_hex(4)
        self._stored[attachment_id] = data
        return attachment_id

    def get(self, attachment_id: str) -> bytes:
        data = self._stored.get(attachment_id)
        if data is None:
            raise ApiError(NOT_FOUND, f"ResourceNotFound, resource [{attachment_id}] not found")
        return data


@dataclass(frozen=True, slots=True)
class Userdata:
    """What a VM was created with: the kind, its payload (the script, the text or the archive)
    and where it goes (relative to the VM's root)."""

    kind: str
    value: bytes
    directory: str = DATA_DIR
    exec_file: str = EXEC_FILE


def from_params(params: Mapping[str, str], attachments: Attachments) -> Userdata | None:
    """The userdata of a RunInstances call, or None without any; every refusal names its
    parameter. A type without ``need_userdata=1`` is refused: QingCloud's default is 0, with which
    it ignores the userdata silently, and a VM would wait for a script that never comes."""
    kind = params.get("userdata_type", "")
    value = params.get("userdata_value", "")
    need = params.get("need_userdata", "")
    if need not in ("", "0", "1"):
        raise invalid(f"parameter [need_userdata] should be 0 or 1, got [{need}]")
    if not kind:
        if value or need == "1":
            raise invalid("parameter [userdata_type] should not be empty with userdata")
        return None
    if kind not in KINDS:
        raise invalid(f"parameter [userdata_type] should be one of {list(KINDS)}, got [{kind}]")
    if need != "1":
        raise invalid(f"parameter [need_userdata] should be 1 with [userdata_type], got [{need or '0'}]")
    if not value:
        raise invalid("parameter [userdata_value] should not be empty")
    # An invalid userdata_path falls back to the default, as QingCloud documents.
    directory = _inside(params.get("userdata_path", "") or "/" + DATA_DIR) or DATA_DIR
    exec_file = EXEC_FILE
    if params.get("userdata_file"):
        chosen = _inside(params["userdata_file"])
        if chosen is None:
            raise invalid(f"parameter [userdata_file] [{params['userdata_file']}] is not an absolute path")
        exec_file = chosen
    if kind == "tar":
        return Userdata("tar", attachments.get(value), directory, exec_file)
    if len(value) > VALUE_LIMIT:
        raise invalid(f"parameter [userdata_value] is longer than {VALUE_LIMIT} characters")
    try:
        decoded = base64.b64decode(value.encode(), validate=True)
    except (binascii.Error, ValueError):
        raise invalid("parameter [userdata_value] should be base64 encoded") from None
    return Userdata(kind, decoded, directory, exec_file)


def _private_write(path: Path, data: bytes, mode: int) -> None:
    """Readable by the VM's root alone: userdata may hold a one-time bootstrap token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(mode)


def materialize(root: Path, userdata: Userdata) -> str | None:
    """Put the userdata in the VM's root (at every boot, as the image's agent does); the path
    (relative to the root) of the script boot runs, or None when there is none to run."""
    directory = root / userdata.directory
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    if userdata.kind == "plain":
        _private_write(directory / STRING_FILE, userdata.value, 0o600)
        return None
    if userdata.kind == "exec":
        _private_write(root / userdata.exec_file, userdata.value, 0o700)
        return userdata.exec_file
    runs = None
    for name, content, mode in _archive_members(userdata.value):
        target = root / name
        if content is None:
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.is_symlink():
            target.unlink()  # never write through a link the image or a boot left there
        _private_write(target, content, mode & 0o700 or 0o600)
        if name == EXEC_FILE:
            runs = EXEC_FILE
    return runs
