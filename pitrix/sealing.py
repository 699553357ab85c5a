"""Secrets sealed at rest: authenticated encryption with a key that never enters etcd.

Whoever reads pitrixd's etcd (a backup, a snapshot, a local user on an unguarded port) must not
learn cloud credentials, SSH and CA private keys, bootstrap tokens or password parameters from it.
Each secret is sealed with AES-256-GCM under a key kept in a file beside pitrixd (0600, in a 0700
directory); the sealed text names the key's id, so a key can be replaced while the old one still
opens what it sealed. Each value is bound to its place (the AAD ``context``: its etcd key, or the
record and field it sits in), so a sealed value copied into another record does not open there.

Replicas on one etcd must hold the same key. A sealed canary in etcd lets a replica with another
key stop at start with a message saying so, instead of failing later on garbage.

Values that are not sealed text are read as they are: records written before sealing existed stay
readable and are sealed again by whoever writes them next (or at once, for the records
:func:`get_sealed` reads).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from pitrix.store import Store

PREFIX = "pitrix-sealed:v1:"
REDACTED = "******"
KEY_BYTES = 32
NONCE_BYTES = 12
CANARY_KEY = "/secrets/canary"
_CANARY_TEXT = b"pitrix secrets canary"


class SealingError(Exception):
    """A secret could not be sealed or opened, or the key cannot be used; the message says why."""


def key_id(key: bytes) -> str:
    """A short public name for ``key``: says which key sealed a value, reveals nothing of it."""
    return hashlib.sha256(b"pitrix secrets key id\0" + key).hexdigest()[:16]


def is_sealed(value: object) -> bool:
    if isinstance(value, bytes):
        return value.startswith(PREFIX.encode())
    return isinstance(value, str) and value.startswith(PREFIX)


def sealed_by(value: str) -> str:
    """The key id a sealed text names ("" if it names none)."""
    return value[len(PREFIX) :].partition(":")[0] if is_sealed(value) else ""


@dataclass(frozen=True)
class Sealer:
    """Seals with the current key; opens with it or any previous one (by the id in the text)."""

    key: bytes = field(repr=False)
    previous: tuple[bytes, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        for key in (self.key, *self.previous):
            if len(key) != KEY_BYTES:
                raise SealingError(f"a secrets key is {KEY_BYTES} bytes, not {len(key)}")

    @classmethod
    def generate(cls) -> Sealer:
        """A sealer with a fresh random key held only in memory (tests, throwaway daemons)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def _cipher(self, kid: str) -> AESGCM | None:
        for key in (self.key, *self.previous):
            if key_id(key) == kid:
                return AESGCM(key)
        return None

    def seal(self, plaintext: bytes | str, context: str) -> str:
        """``plaintext`` as sealed text, bound to ``context`` (where it is stored)."""
        data = plaintext.encode() if isinstance(plaintext, str) else plaintext
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = AESGCM(self.key).encrypt(nonce, data, _aad(context))
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}{self.key_id}:{body}"

    def unseal(self, text: str | bytes, context: str) -> bytes:
        """The plaintext of sealed ``text`` stored at ``context``; SealingError (without any of
        the secret) when it names a key this sealer lacks, or was altered or moved."""
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        if not is_sealed(text):
            raise SealingError(f"{context}: not a sealed value")
        kid, _, body = text[len(PREFIX) :].partition(":")
        cipher = self._cipher(kid)
        if cipher is None:
            raise SealingError(
                f"{context}: sealed with secrets key {kid}, but this pitrixd holds key {self.key_id}"
            )
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            raise SealingError(f"{context}: the sealed value is damaged") from None
        try:
            return cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(context))
        except InvalidTag:
            raise SealingError(
                f"{context}: the sealed value does not open (altered, or sealed for another record)"
            ) from None

    def open_text(self, value: str, context: str) -> str:
        """A value as stored, opened if sealed, as it is if written before sealing existed."""
        return self.unseal(value, context).decode() if is_sealed(value) else value

    def seal_text(self, value: str, context: str) -> str:
        """``value`` sealed, unless it is already (sealing twice would hide it from its readers)."""
        return value if is_sealed(value) else self.seal(value, context)


def _aad(context: str) -> bytes:
    return b"pitrix\0" + context.encode()


def redact(data: Any) -> Any:
    """``data`` (JSON-shaped) with every sealed text replaced by :data:`REDACTED`."""
    if isinstance(data, dict):
        return {k: redact(v) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return REDACTED if is_sealed(data) else data


# -- the key file ---------------------------------------------------------------------------------


def read_key_file(path: Path) -> bytes:
    """The key in ``path`` (base64 of 32 bytes), refused if anyone but its owner may read it."""
    try:
        info = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        raise SealingError(f"secrets key file {path} does not exist") from None
    except OSError as exc:
        raise SealingError(f"secrets key file {path} cannot be read: {exc.strerror}") from None
    if info.st_mode & 0o077:
        raise SealingError(
            f"secrets key file {path} is open to other users (mode {stat.filemode(info.st_mode)}): "
            f"chmod 600 {path}"
        )
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise SealingError(f"secrets key file {path} does not hold a key (base64 of {KEY_BYTES} bytes)")
    return key


def create_key_file(path: Path) -> bool:
    """Make ``path`` hold a new random key (0600, its directory 0700) unless it exists already.

    The file appears whole or not at all (written aside, then linked into place), so replicas
    started together on one shared path all end up with the one key the first of them wrote.
    True if this call made it.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n"
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.link(aside, path)
        return True
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()


def load_sealer(key_file: Path, previous: Iterable[Path] = (), create: bool = True) -> tuple[Sealer, bool]:
    """The sealer of ``key_file`` (made first if absent and ``create``), and whether it was made now."""
    created = create_key_file(key_file) if create else False
    return Sealer(read_key_file(key_file), tuple(read_key_file(p) for p in previous)), created


# -- sealed records in etcd -----------------------------------------------------------------------


async def check_canary(
    store: Store, sealer: Sealer, key_file: Path | None = None, created: bool = False
) -> None:
    """Refuse to go on with a key other than the one this etcd's secrets are sealed with.

    The first pitrixd on an etcd leaves a sealed canary; every later start opens it. A canary
    sealed with a previous key is sealed again with the current one (rotation).
    """
    kv = await store.get(CANARY_KEY)
    if kv is None:
        await store.create(CANARY_KEY, sealer.seal(_CANARY_TEXT, CANARY_KEY))
        kv = await store.get(CANARY_KEY)
        if kv is None:
            raise SealingError(f"the secrets canary {CANARY_KEY} vanished right after it was stored")
    try:
        sealer.unseal(kv.value, CANARY_KEY)
    except SealingError:
        where = f"{key_file}{' (made just now)' if created else ''}" if key_file else "this pitrixd"
        raise SealingError(
            f"secrets key mismatch: this etcd's secrets are sealed with key "
            f"{sealed_by(kv.value.decode(errors='replace')) or '(unknown)'}, but {where} holds key "
            f"{sealer.key_id}. Every pitrixd on one etcd needs the same key file: copy it from the "
            "replica that made it (docs/config.md, [secrets])"
        ) from None
    if sealed_by(kv.value.decode()) != sealer.key_id:
        await store.compare_and_swap(CANARY_KEY, kv.mod_revision, sealer.seal(_CANARY_TEXT, CANARY_KEY))


async def get_sealed(store: Store, key: str, sealer: Sealer) -> bytes | None:
    """The opened value at ``key`` (None if absent); one stored in clear is sealed in place."""
    kv = await store.get(key)
    if kv is None:
        return None
    if is_sealed(kv.value):
        return sealer.unseal(kv.value, key)
    # Written before sealing existed: seal it now, unless someone changed it meanwhile.
    await store.compare_and_swap(key, kv.mod_revision, sealer.seal(kv.value, key))
    return kv.value


async def create_sealed(store: Store, key: str, value: bytes | str, sealer: Sealer) -> bytes:
    """Store ``value`` sealed at ``key`` unless a value is there already; the value that stays
    (``value`` itself when this call created it: no read back)."""
    if await store.create(key, sealer.seal(value, key)):
        return value.encode() if isinstance(value, str) else bytes(value)
    stored = await get_sealed(store, key, sealer)
    if stored is None:
        raise SealingError(f"{key}: vanished right after it was stored")
    return stored
