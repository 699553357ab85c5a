"""Sealing secrets: AES-GCM bound to each value's place, a key file only its owner reads, a canary."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from pitrix.sealing import (
    CANARY_KEY,
    REDACTED,
    Sealer,
    SealingError,
    check_canary,
    create_key_file,
    create_sealed,
    get_sealed,
    is_sealed,
    load_sealer,
    read_key_file,
    redact,
    sealed_by,
)
from pitrix.store import Store


def test_a_sealed_value_opens_only_with_its_key_and_in_its_place() -> None:
    sealer = Sealer.generate()
    text = sealer.seal("hunter2", "/runtimes/a/secret_access_key")
    assert is_sealed(text) and "hunter2" not in text and sealed_by(text) == sealer.key_id
    assert sealer.unseal(text, "/runtimes/a/secret_access_key") == b"hunter2"
    assert sealer.seal("hunter2", "x") != sealer.seal("hunter2", "x")  # a fresh nonce every time
    # Copied into another record, it does not open; the error never carries the secret.
    with pytest.raises(SealingError, match="sealed for another record") as moved:
        sealer.unseal(text, "/runtimes/b/secret_access_key")
    assert "hunter2" not in str(moved.value)
    with pytest.raises(SealingError, match=f"sealed with secrets key {sealer.key_id}"):
        Sealer.generate().unseal(text, "/runtimes/a/secret_access_key")
    tampered = text[:-2] + ("A" if text[-2] != "A" else "B") + text[-1]
    with pytest.raises(SealingError):
        sealer.unseal(tampered, "/runtimes/a/secret_access_key")
    # Values from before sealing read as they are; sealing twice is never done.
    assert sealer.open_text("plain", "x") == "plain"
    assert sealer.seal_text(text, "y") == text


def test_a_previous_key_still_opens_what_it_sealed() -> None:
    old = Sealer.generate()
    text = old.seal("s", "c")
    rotated = Sealer(Sealer.generate().key, previous=(old.key,))
    assert rotated.unseal(text, "c") == b"s"
    assert sealed_by(rotated.seal("s", "c")) == rotated.key_id != old.key_id


def test_redact_hides_sealed_values_anywhere_in_a_document() -> None:
    sealer = Sealer.generate()
    doc = {"env": {"web": {"pw": sealer.seal("p", "c"), "n": "1"}}, "list": [sealer.seal("q", "c"), 2]}
    assert redact(doc) == {"env": {"web": {"pw": REDACTED, "n": "1"}}, "list": [REDACTED, 2]}


def test_the_key_file_is_made_private_once_and_refused_when_others_may_read_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secret.key"
    sealer, created = load_sealer(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again, created = load_sealer(path)
    assert not created and again.key_id == sealer.key_id
    assert [p.name for p in path.parent.iterdir()] == ["secret.key"]  # nothing left aside
    os.chmod(path, 0o644)
    with pytest.raises(SealingError, match=r"open to other users .*chmod 600"):
        read_key_file(path)
    os.chmod(path, 0o600)
    path.write_text("not a key\n")
    with pytest.raises(SealingError, match="does not hold a key"):
        read_key_file(path)
    with pytest.raises(SealingError, match="does not exist"):
        read_key_file(tmp_path / "missing.key")


async def test_replicas_starting_together_on_one_path_share_the_first_key(tmp_path: Path) -> None:
    path = tmp_path / "shared.key"
    made = await asyncio.gather(*(asyncio.to_thread(create_key_file, path) for _ in range(8)))
    assert made.count(True) == 1
    assert len({load_sealer(path, create=False)[0].key_id for _ in range(3)}) == 1


async def test_the_canary_refuses_another_key_and_follows_a_rotation(store: Store) -> None:
    first = Sealer.generate()
    await check_canary(store, first)
    await check_canary(store, first)  # the same key passes again
    stranger = Sealer.generate()
    with pytest.raises(SealingError) as refused:
        await check_canary(store, stranger, Path("/etc/pitrix/secret.key"), created=True)
    message = str(refused.value)
    assert f"sealed with key {first.key_id}" in message
    assert f"/etc/pitrix/secret.key (made just now) holds key {stranger.key_id}" in message
    rotated = Sealer(stranger.key, previous=(first.key,))
    await check_canary(store, rotated)
    kv = await store.get(CANARY_KEY)
    assert kv is not None and sealed_by(kv.value.decode()) == rotated.key_id
    with pytest.raises(SealingError, match="key mismatch"):
        await check_canary(store, first)  # the old key alone no longer opens it


async def test_records_from_before_sealing_are_read_and_sealed_in_place(store: Store) -> None:
    sealer = Sealer.generate()
    await store.put("/keypairs/o/r", b"-----BEGIN OPENSSH PRIVATE KEY-----\nclear\n")
    assert await get_sealed(store, "/keypairs/o/r", sealer) == b"-----BEGIN OPENSSH PRIVATE KEY-----\nclear\n"
    kv = await store.get("/keypairs/o/r")
    assert kv is not None and is_sealed(kv.value) and b"clear" not in kv.value
    assert await get_sealed(store, "/keypairs/o/r", sealer) == b"-----BEGIN OPENSSH PRIVATE KEY-----\nclear\n"
    # create-if-absent: the first value stays, whoever asks later
    assert await create_sealed(store, "/t", "one", sealer) == b"one"
    assert await create_sealed(store, "/t", "two", sealer) == b"one"
    assert await get_sealed(store, "/absent", sealer) is None
