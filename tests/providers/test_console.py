"""The console parser: cloud-init's host-key block, as real consoles garble it."""

from __future__ import annotations

import asyncssh

from pitrix.providers.console import host_keys_from_console
from simulator.ssh import console_text


def public(kind: str = "ssh-ed25519") -> str:
    key = asyncssh.generate_private_key(kind, **({"key_size": 1024} if kind == "ssh-rsa" else {}))
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def test_the_simulators_console_gives_its_key() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    [line] = host_keys_from_console(console_text("i-1", key))
    assert asyncssh.import_public_key(line).public_data == key.public_data


def test_every_key_of_the_block_comments_dropped_prefixes_tolerated() -> None:
    ed, ecdsa, rsa = public(), public("ecdsa-sha2-nistp256"), public("ssh-rsa")
    text = (
        "[    2.1] Booting\n"
        "ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
        "ec2: 256 SHA256:abc root@x (ED25519)\n"
        "ec2: -----END SSH HOST KEY FINGERPRINTS-----\n"
        "-----BEGIN SSH HOST KEY KEYS-----\r\n"
        f"{ecdsa} root@x\r\n"
        f"[   13.37] cloud-init[612]: {ed} root@x\n"
        "[   13.38] random: crng init done\n"  # the kernel talks in the middle
        f"{rsa}\n"
        "-----END SSH HOST KEY KEYS-----\n"
        "login: "
    )
    assert host_keys_from_console(text) == [ecdsa, ed, rsa]


def test_the_last_complete_block_wins() -> None:
    first, second, torn = public(), public(), public()
    text = (
        f"-----BEGIN SSH HOST KEY KEYS-----\n{first}\n-----END SSH HOST KEY KEYS-----\n"
        "reboot\n"
        f"-----BEGIN SSH HOST KEY KEYS-----\n{second}\n-----END SSH HOST KEY KEYS-----\n"
        f"-----BEGIN SSH HOST KEY KEYS-----\n{torn}\n"  # still being printed
    )
    assert host_keys_from_console(text) == [second]


def test_no_block_no_keys_and_no_forgeries() -> None:
    assert host_keys_from_console("") == []
    assert host_keys_from_console("Ubuntu 22.04 LTS\nlogin: ") == []
    assert host_keys_from_console(public() + "\n") == []  # outside any block
    ed = public()
    wrong_kind = "ssh-rsa " + ed.split()[1]  # a blob that names another type than the line
    not_base64 = "ssh-ed25519 AAAA!!!!"
    forged = f"-----BEGIN SSH HOST KEY KEYS-----\n{wrong_kind}\n{not_base64}\n-----END SSH HOST KEY KEYS-----"
    assert host_keys_from_console(forged) == []
    empty_then_good = (
        "-----BEGIN SSH HOST KEY KEYS-----\n-----END SSH HOST KEY KEYS-----\n"
        f"-----BEGIN SSH HOST KEY KEYS-----\n{ed}\n-----END SSH HOST KEY KEYS-----\n"
    )
    assert host_keys_from_console(empty_then_good) == [ed]
