"""The embedded etcd behind identity: only a client holding its client certificate gets any key.

Plain HTTP, TLS without a certificate and TLS with a certificate from another CA are refused on
the client port, and the peer port refuses whoever has no peer certificate; another local user
can read none of its files. Each refusal is checked beside the same request with the right
certificate, which is answered: a probe that could not get through to a working etcd proves
nothing.
"""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pitrix import pki
from pitrix.store import Store, StoreError, etcd_pki
from pitrix.store.embedded import EmbeddedEtcd, PidRecord
from pitrix.store.etcd_pki import EtcdPKI
from pitrix.store.tls import EtcdTLS
from tests.etcd_probes import (
    certless,
    needs_root,
    plain,
    probe_as_unprivileged_user,
    request,
    with_cert,
    world_traversable,
)


@pytest.fixture
async def etcd(tmp_path: Path) -> AsyncIterator[EmbeddedEtcd]:
    started = EmbeddedEtcd(tmp_path / "state", unsafe_no_fsync=True)
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


def peer_url(etcd: EmbeddedEtcd) -> str:
    record = PidRecord.load(etcd.record_path)
    assert record is not None
    return record.peer_url


def tls_of(etcd: EmbeddedEtcd) -> EtcdTLS:
    tls = etcd.client_tls
    assert tls is not None and tls.ca_file and tls.cert_file and tls.key_file
    return tls


async def test_only_the_client_certificate_gets_an_answer(etcd: EmbeddedEtcd, tmp_path: Path) -> None:
    tls = tls_of(etcd)
    assert tls.ca_file and tls.cert_file and tls.key_file
    url = etcd.client_url
    assert url.startswith("https://127.0.0.1:")
    owned = request(url, context=with_cert(tls.ca_file, tls.cert_file, tls.key_file))
    assert owned.answered, owned.detail

    assert not (outcome := request(plain(url))).answered, outcome.detail
    assert not (outcome := request(url, context=certless(tls.ca_file))).answered, outcome.detail
    # A certificate that some other CA signed (a metad's, another etcd's) is no better than none.
    stranger = pki.CertificateAuthority.create("stranger CA")
    stranger.issue_client(pki.Subject("root", "pitrix", "etcd")).write(tmp_path / "s.crt", tmp_path / "s.key")
    foreign = with_cert(tls.ca_file, tmp_path / "s.crt", tmp_path / "s.key")
    assert not (outcome := request(url, context=foreign)).answered, outcome.detail


async def test_the_peer_port_wants_a_peer_certificate(etcd: EmbeddedEtcd) -> None:
    tls = tls_of(etcd)
    assert tls.ca_file
    peer = peer_url(etcd)
    assert peer.startswith("https://")
    pki_dir = EtcdPKI(etcd.pki_dir)
    member = with_cert(pki_dir.ca_cert, pki_dir.member_cert, pki_dir.member_key)
    # With the member's own certificate the peer port lists the members; without one, nothing.
    assert (outcome := request(peer, "/members", context=member, method="GET")).answered, outcome.detail
    assert not (outcome := request(plain(peer), "/members", method="GET")).answered, outcome.detail
    outcome = request(peer, "/members", context=certless(tls.ca_file), method="GET")
    assert not outcome.answered and not outcome.detail.startswith("HTTP/"), outcome.detail


async def test_key_material_is_private_and_kept_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)  # made by someone else (a package, an operator) with a loose mode
    etcd = EmbeddedEtcd(state, unsafe_no_fsync=True)
    await etcd.start()
    try:
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_IMODE(etcd.pki_dir.stat().st_mode) == 0o700
        for path in etcd.pki_dir.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for name in ("etcd.log", "etcd.pid.json", "etcd.ports.json"):
            assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
        before = {p.name: p.read_bytes() for p in etcd.pki_dir.iterdir()}
    finally:
        await etcd.stop()
    again = EmbeddedEtcd(state, unsafe_no_fsync=True)
    url = await again.start()
    try:
        assert {p.name: p.read_bytes() for p in again.pki_dir.iterdir()} == before
        async with Store([url], tls=again.client_tls) as store:
            await store.put("/k", b"v")
    finally:
        await again.stop()


async def test_a_client_certificate_due_for_renewal_is_issued_anew_and_the_child_restarted(
    tmp_path: Path,
) -> None:
    etcd = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    url = await etcd.start()
    first_pid = etcd.pid
    layout = EtcdPKI(etcd.pki_dir)
    ca = pki.CertificateAuthority.load_pair(layout.ca_cert, layout.ca_key)
    client = layout.client
    assert client.cert_file and client.key_file
    # A certificate at the end of its life, as it would be after most of a year.
    ca.issue_client(pki.Subject("old", "pitrix", "etcd"), lifetime=dt.timedelta(0)).write(
        client.cert_file, client.key_file
    )
    stale = client.cert_file.read_bytes()
    successor = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    try:
        assert await successor.start() == url
        assert client.cert_file.read_bytes() != stale
        assert not successor.reused and successor.pid != first_pid
        async with Store([url], tls=successor.client_tls) as store:
            assert await store.revision() > 0
    finally:
        await successor.stop()
        await etcd.stop()


async def test_a_new_host_gets_a_member_certificate_naming_it(tmp_path: Path) -> None:
    etcd = EmbeddedEtcd(tmp_path, host="127.0.0.1", unsafe_no_fsync=True)
    await etcd.start()
    await etcd.stop()
    moved = EmbeddedEtcd(tmp_path, host="127.0.0.2", unsafe_no_fsync=True)
    url = await moved.start()
    try:
        assert url.startswith("https://127.0.0.2:")
        async with Store([url], tls=moved.client_tls) as store:
            assert await store.revision() > 0
    finally:
        await moved.stop()


async def test_a_plain_child_left_by_an_older_pitrix_is_replaced_by_a_tls_one(tmp_path: Path) -> None:
    old = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True, tls=False)
    old_url = await old.start()
    assert old_url.startswith("http://")
    old_pid = old.pid
    async with Store([old_url]) as store:
        await store.put("/from-before", b"kept")
    new = EmbeddedEtcd(tmp_path, unsafe_no_fsync=True)
    try:
        url = await new.start()
        assert url == "https://" + old_url.split("://")[1]
        assert not new.reused and new.pid != old_pid
        assert not (outcome := request(plain(url))).answered, outcome.detail
        async with Store([url], tls=new.client_tls) as store:
            kv = await store.get("/from-before")
            assert kv is not None and kv.value == b"kept"
    finally:
        await new.stop()


async def test_the_store_refuses_mismatched_endpoints_and_unreadable_material(tmp_path: Path) -> None:
    tls = EtcdTLS(tmp_path / "ca.crt", tmp_path / "c.crt", tmp_path / "c.key")
    with pytest.raises(StoreError, match="is https:// but no TLS material"):
        Store(["https://127.0.0.1:2379"])
    with pytest.raises(StoreError, match="plain http:// but TLS material is given"):
        Store(["http://127.0.0.1:2379"], tls=tls)
    with pytest.raises(StoreError, match=r"ca_file: .*ca.crt"):
        await Store.connect(["https://127.0.0.1:2379"], tls=tls)


async def test_another_local_user_reads_no_key_and_gets_no_answer(tmp_path: Path) -> None:
    if (why := needs_root()) is not None:
        pytest.fail(why)
    state = world_traversable(tmp_path) / "state"
    etcd = EmbeddedEtcd(state, unsafe_no_fsync=True)
    url = await etcd.start()
    try:
        async with Store([url], prefix="/pitrix", tls=etcd.client_tls) as store:
            await store.put("/keypairs/usr-a/kp-1", b"-----BEGIN OPENSSH PRIVATE KEY-----")
        seen = probe_as_unprivileged_user(state, url, peer_url(etcd))
    finally:
        await etcd.stop()
    assert seen["readable"] == [], seen
    answers = seen["answers"]
    assert isinstance(answers, dict) and len(answers) == 4
    assert not any(a["answered"] for a in answers.values()), answers


def test_the_pki_is_reused_until_due_and_a_due_ca_takes_every_leaf_with_it(tmp_path: Path) -> None:
    made = etcd_pki.ensure(tmp_path / "pki", "127.0.0.1")
    assert made.renewed
    files = {p.name: p.read_bytes() for p in made.directory.iterdir()}
    assert set(files) == {"ca.crt", "ca.key", "member.crt", "member.key", "client.crt", "client.key"}
    kept = etcd_pki.ensure(tmp_path / "pki", "127.0.0.1")
    assert not kept.renewed and {p.name: p.read_bytes() for p in kept.directory.iterdir()} == files
    # A CA at the end of its life: a new one, and leaves it signed.
    old = pki.CertificateAuthority.create("old etcd CA", lifetime=dt.timedelta(0))
    made.ca_cert.write_bytes(old.cert_pem)
    made.ca_key.write_bytes(pki.key_to_pem(old.key))
    renewed = etcd_pki.ensure(tmp_path / "pki", "127.0.0.1")
    assert renewed.renewed
    ca = pki.CertificateAuthority.load_pair(renewed.ca_cert, renewed.ca_key)
    assert ca.cert_pem != old.cert_pem and ca.cert_pem != files["ca.crt"]
    client = renewed.client
    assert client.cert_file is not None
    for leaf in (renewed.member_cert, client.cert_file):
        ca.verify(pki.cert_from_pem(leaf.read_bytes()))
