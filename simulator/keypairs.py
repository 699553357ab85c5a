"""SSH key pairs as QingCloud keeps them: a public key, a name, and the instances it is attached to.

The cloud keeps only the public half. A key pair created in ``system`` mode is generated here and
its private key is returned once, in the CreateKeyPair answer, as QingCloud does; in ``user`` mode
the caller brings the public key. A VM's SSH server asks this book which keys it accepts at the
moment of each login, so attaching or detaching takes effect on the next connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncssh

from simulator.errors import BAD_STATUS, NOT_FOUND, ApiError, invalid
from simulator.jobs import resource_id
from simulator.vm import now_iso

ENCRYPT_METHODS = {"ssh-rsa": "ssh-rsa", "ssh-dss": "ssh-dss", "ssh-ed25519": "ssh-ed25519"}
RSA_BITS = 2048


@dataclass
class KeyPair:
    keypair_id: str
    name: str
    encrypt_method: str
    public_key: asyncssh.SSHKey
    description: str = ""
    instance_ids: list[str] = field(default_factory=list)
    create_time: str = field(default_factory=now_iso)

    def pub_key(self) -> str:
        """The public key as one ``authorized_keys`` line (type, base64, comment = the key pair id)."""
        kind, blob = self.public_key.export_public_key("openssh").decode().split()[:2]
        return f"{kind} {blob} {self.keypair_id}"

    def describe(self) -> dict[str, object]:
        return {
            "keypair_id": self.keypair_id,
            "keypair_name": self.name,
            "description": self.description,
            "pub_key": self.pub_key(),
            "encrypt_method": self.encrypt_method,
            "instance_ids": list(self.instance_ids),
            "create_time": self.create_time,
            "tags": [],
        }


def parse_public_key(text: str) -> asyncssh.SSHKey:
    """An OpenSSH public key line (``ssh-ed25519 AAAA... comment``); bad text is a parameter error."""
    try:
        return asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise invalid(f"parameter [public_key] is not an OpenSSH public key ({exc})") from None


def generate_private_key(encrypt_method: str) -> asyncssh.SSHKey:
    if encrypt_method == "ssh-rsa":
        return asyncssh.generate_private_key("ssh-rsa", key_size=RSA_BITS)
    return asyncssh.generate_private_key(encrypt_method)


class KeyPairBook:
    """Every key pair of this cloud, and which instances each is attached to."""

    def __init__(self) -> None:
        self._pairs: dict[str, KeyPair] = {}

    def create(
        self, *, name: str, mode: str, encrypt_method: str, public_key: str, description: str = ""
    ) -> tuple[KeyPair, str]:
        """A new key pair and, in ``system`` mode, its private key in OpenSSH format ("" otherwise)."""
        if encrypt_method not in ENCRYPT_METHODS:
            raise invalid(
                f"parameter [encrypt_method] should be one of {sorted(ENCRYPT_METHODS)}, "
                f"got [{encrypt_method}]"
            )
        private = ""
        if mode == "system":
            if public_key:
                raise invalid("parameter [public_key] is only accepted with mode [user]")
            key = generate_private_key(encrypt_method)
            private = key.export_private_key("openssh").decode()
            public = key.convert_to_public()
        elif mode == "user":
            if not public_key:
                raise invalid("parameter [public_key] should not be empty with mode [user]")
            public = parse_public_key(public_key)
            encrypt_method = public.get_algorithm()
        else:
            raise invalid(f"parameter [mode] should be system or user, got [{mode}]")
        kid = resource_id("kp")
        while kid in self._pairs:
            kid = resource_id("kp")
        pair = KeyPair(kid, name or kid, encrypt_method, public, description)
        self._pairs[kid] = pair
        return pair, private

    def get(self, keypair_id: str) -> KeyPair:
        pair = self._pairs.get(keypair_id)
        if pair is None:
            raise ApiError(NOT_FOUND, f"ResourceNotFound, resource [{keypair_id}] not found")
        return pair

    def existing(self, keypair_ids: list[str]) -> list[KeyPair]:
        return [self.get(kid) for kid in keypair_ids]

    def describe(
        self, *, keypair_ids: list[str], search_word: str, encrypt_method: str, instance_id: str
    ) -> list[KeyPair]:
        """Matching key pairs, newest first."""
        wanted = set(keypair_ids)
        word = search_word.lower()
        return [
            pair
            for pair in reversed(self._pairs.values())
            if (not wanted or pair.keypair_id in wanted)
            and (not word or word in pair.keypair_id or word in pair.name.lower())
            and (not encrypt_method or pair.encrypt_method == encrypt_method)
            and (not instance_id or instance_id in pair.instance_ids)
        ]

    def attach(self, pairs: list[KeyPair], instance_ids: list[str]) -> None:
        for pair in pairs:
            for iid in instance_ids:
                if iid not in pair.instance_ids:
                    pair.instance_ids.append(iid)

    def detach(self, pairs: list[KeyPair], instance_ids: list[str]) -> None:
        for pair in pairs:
            pair.instance_ids = [iid for iid in pair.instance_ids if iid not in instance_ids]

    def delete(self, keypair_ids: list[str]) -> list[str]:
        """Remove unattached key pairs; one still attached refuses the whole call."""
        pairs = self.existing(list(dict.fromkeys(keypair_ids)))
        for pair in pairs:
            if pair.instance_ids:
                raise ApiError(
                    BAD_STATUS,
                    f"ResourceInUse, keypair [{pair.keypair_id}] is attached to {pair.instance_ids}",
                )
        for pair in pairs:
            del self._pairs[pair.keypair_id]
        return [pair.keypair_id for pair in pairs]

    def forget_instance(self, instance_id: str) -> None:
        """A terminated instance holds no key pair any more."""
        for pair in self._pairs.values():
            if instance_id in pair.instance_ids:
                pair.instance_ids.remove(instance_id)

    def ids_of(self, instance_id: str) -> list[str]:
        """The key pairs attached to an instance now, oldest first (DescribeInstances' keypair_ids)."""
        return [pair.keypair_id for pair in self._pairs.values() if instance_id in pair.instance_ids]

    def keys_of(self, instance_id: str) -> list[asyncssh.SSHKey]:
        """The public keys an instance's SSH server accepts now."""
        return [pair.public_key for pair in self._pairs.values() if instance_id in pair.instance_ids]
