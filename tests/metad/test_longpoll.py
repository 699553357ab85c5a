"""Long-poll: wakes on relevant changes only, versions line up, many waiters released by one write."""

from __future__ import annotations

import asyncio

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.metad.waiters import Waiter, WaiterIndex
from pitrix.store import Store, WatchBatch

DEADLINE = 10.0


async def _held(metad: Metad, instances, ip: str, path: str, since: int | str, count: int) -> asyncio.Task:
    """Start a long-poll and return once metad holds it (``count`` waiters in all)."""
    task = asyncio.create_task(instances.get(ip, path, wait="true", prev_version=since))
    await asyncio.wait_for(metad.mirror.waiters.wait_for_count(count), DEADLINE)
    assert not task.done()
    return task


async def test_wakes_on_own_env_not_on_other_role_or_cluster(seed, instances, net, metad, manage) -> None:
    await seed()
    _, _, headers = await instances.get(net.ip(1), "/self/env")
    since = int(headers["X-Metad-Version"])
    env_poll = await _held(metad, instances, net.ip(1), "/self/env", since, 1)
    whole_poll = await _held(metad, instances, net.ip(2), "/self", since, 2)

    # Irrelevant to the env view: another role's env, another cluster, a status key.
    r1 = await manage.put_data("/clusters/c1/env/db", {"max_conn": 200})
    r2 = await manage.put_data("/clusters/c3/env/x", {"k": "v"})
    r3 = await manage.put_data("/_pitrix/status/c1/i-db1/health", '{"ok": true}')
    await metad.mirror.wait_for_revision(max(r1, r2, r3))
    assert not env_poll.done() and not whole_poll.done()
    assert len(metad.mirror.waiters) == 2

    changed = await manage.put_data("/clusters/c1/env/web/workers", 8)
    status, env, headers = await asyncio.wait_for(env_poll, DEADLINE)
    assert status == 200 and env == {"port": "80", "workers": "8"}
    assert int(headers["X-Metad-Version"]) == changed
    status, view, headers = await asyncio.wait_for(whole_poll, DEADLINE)
    assert view["env"]["workers"] == "8"
    assert int(headers["X-Metad-Version"]) == changed


async def test_host_and_cmd_views_are_per_instance(seed, instances, net, metad, manage) -> None:
    await seed()
    since = metad.mirror.revision
    web2_cmd = await _held(metad, instances, net.ip(2), "/self/cmd", since, 1)
    web2_host = await _held(metad, instances, net.ip(2), "/self/host", since, 2)
    r = await manage.put_data("/clusters/c1/cmd/i-web1", {"id": "cmd-2"})
    r = max(r, await manage.put_data("/clusters/c1/hosts/web/i-web1", {"status": "active"}))
    await metad.mirror.wait_for_revision(r)
    assert not web2_cmd.done() and not web2_host.done()
    changed = await manage.put_data("/clusters/c1/cmd/i-web2", {"id": "cmd-3", "cmd": "x", "timeout": 5})
    _, cmd, headers = await asyncio.wait_for(web2_cmd, DEADLINE)
    assert cmd == {"id": "cmd-3", "cmd": "x", "timeout": "5"} and int(headers["X-Metad-Version"]) == changed
    assert not web2_host.done()
    changed = await manage.put_data("/clusters/c1/hosts/web/i-web2/status", "active")
    _, host, headers = await asyncio.wait_for(web2_host, DEADLINE)
    assert host["status"] == "active" and int(headers["X-Metad-Version"]) == changed


async def test_links_wake_on_the_linked_cluster_only(seed, instances, net, metad, manage) -> None:
    await seed()
    poll = await _held(metad, instances, net.ip(1), "/self/links", metad.mirror.revision, 1)
    r = await manage.put_data("/clusters/c3/hosts/x/i-x1/status", "active")  # foreign owner: not linked
    await metad.mirror.wait_for_revision(r)
    assert not poll.done()
    changed = await manage.put_data("/clusters/c2/endpoints/http/port", 9000)
    _, links, headers = await asyncio.wait_for(poll, DEADLINE)
    assert links["store"]["endpoints"]["http"]["port"] == "9000"
    assert int(headers["X-Metad-Version"]) == changed


async def test_already_changed_view_answers_immediately(seed, instances, net, metad, manage) -> None:
    await seed()
    _, _, headers = await instances.get(net.ip(1), "/self/env")
    old = int(headers["X-Metad-Version"])
    changed = await manage.put_data("/clusters/c1/env/web/port", 81)
    await metad.mirror.wait_for_revision(changed)
    # wait_timeout is 30 s: only an immediate answer meets this deadline.
    _, env, headers = await asyncio.wait_for(
        instances.get(net.ip(1), "/self/env", wait="true", prev_version=old), 2.0
    )
    assert env["port"] == "81" and int(headers["X-Metad-Version"]) == changed
    assert len(metad.mirror.waiters) == 0


async def test_sending_the_version_back_holds_until_the_next_change(
    seed, instances, net, metad, manage
) -> None:
    await seed()
    changed = await manage.put_data("/clusters/c1/env/web/port", 82)
    await metad.mirror.wait_for_revision(changed)
    _, _, headers = await instances.get(net.ip(1), "/self/env")
    version = int(headers["X-Metad-Version"])
    assert version >= changed
    poll = await _held(metad, instances, net.ip(1), "/self/env", version, 1)
    assert not poll.done()
    again = await manage.put_data("/clusters/c1/env/web/port", 83)
    _, env, headers = await asyncio.wait_for(poll, DEADLINE)
    assert env["port"] == "83" and int(headers["X-Metad-Version"]) == again


async def test_wait_without_prev_version_holds_for_the_next_change(
    seed, instances, net, metad, manage
) -> None:
    await seed()
    task = asyncio.create_task(instances.get(net.ip(1), "/self/env/port", wait="true"))
    await asyncio.wait_for(metad.mirror.waiters.wait_for_count(1), DEADLINE)
    changed = await manage.put_data("/clusters/c1/env/web/port", 90)
    _, port, headers = await asyncio.wait_for(task, DEADLINE)
    assert port == "90" and int(headers["X-Metad-Version"]) == changed


async def test_missing_path_waits_for_it_to_appear(seed, instances, net, metad, manage) -> None:
    await seed()
    poll = await _held(metad, instances, net.ip(2), "/self/cmd", metad.mirror.revision, 1)
    changed = await manage.put_data("/clusters/c1/cmd/i-web2", {"id": "c-9", "cmd": "true"})
    status, cmd, headers = await asyncio.wait_for(poll, DEADLINE)
    assert status == 200 and cmd["id"] == "c-9" and int(headers["X-Metad-Version"]) == changed


async def test_server_timeout_answers_the_current_value(store: Store, net, seed, instances) -> None:
    # A second metad on the same store with a short hold.
    short = Metad(store, net.metad_ip, 0, 0, wait_timeout=0.3)
    await short.start()
    try:
        instances.base_url = short.instance_url
        await seed()
        await short.mirror.wait_for_revision(await store.revision())
        since = short.mirror.revision
        status, env, headers = await asyncio.wait_for(
            instances.get(net.ip(1), "/self/env", wait="true", prev_version=since), DEADLINE
        )
        assert status == 200 and env["port"] == "80"
        assert int(headers["X-Metad-Version"]) == since
    finally:
        await short.stop()


async def test_pruned_history_answers_old_versions_at_once(seed, instances, net, metad, manage) -> None:
    await seed()
    metad.mirror.prune_after = 2
    old = metad.mirror.revision
    await manage.delete_data("/clusters/c3")  # many deletes: the tombstones get swept
    r = await manage.put_data("/clusters/c1/env/db/y", "1")
    await metad.mirror.wait_for_revision(r)
    assert metad.mirror.base_revision > old
    # The mirror cannot tell whether /self/env changed since ``old`` any more: it answers at once.
    status, env, _ = await asyncio.wait_for(
        instances.get(net.ip(1), "/self/env", wait="true", prev_version=old), 2.0
    )
    assert status == 200 and env["port"] == "80"
    poll = await _held(metad, instances, net.ip(1), "/self/env", metad.mirror.revision, 1)
    changed = await manage.put_data("/clusters/c1/env/web/port", 88)
    _, env, headers = await asyncio.wait_for(poll, DEADLINE)
    assert env["port"] == "88" and int(headers["X-Metad-Version"]) == changed


async def test_unmapped_waiter_is_refused_when_woken(seed, instances, net, metad, manage) -> None:
    await seed()
    poll = await _held(metad, instances, net.ip(2), "/self", metad.mirror.revision, 1)
    await manage.delete_mapping("i-web2")
    status, _, _ = await asyncio.wait_for(poll, DEADLINE)
    assert status == 403


async def test_waiting_on_a_path_that_can_never_exist_is_404_at_once(seed, instances, net, metad) -> None:
    await seed()
    for path in ("/self/bogus", "/clusters/c1", "/self/status/heartbeat"):
        status, body, _ = await asyncio.wait_for(
            instances.get(net.ip(1), path, wait="true", prev_version=metad.mirror.revision), 2.0
        )
        assert (status, body) == (404, {"code": 404, "message": "Not found", "type": "ERROR"}), path


async def test_unreadable_prev_version_is_absent_and_the_poll_held(
    seed, instances, net, metad, manage
) -> None:
    """As metad: ``prev_version=abc`` is no version at all, so the poll waits for the next change."""
    await seed()
    poll = await _held(metad, instances, net.ip(1), "/self/env", "abc", 1)
    changed = await manage.put_data("/clusters/c1/env/web/workers", 9)
    status, env, headers = await asyncio.wait_for(poll, DEADLINE)
    assert (status, env["workers"]) == (200, "9") and int(headers["X-Metad-Version"]) == changed


async def test_disconnected_waiters_are_dropped(seed, instances, net, metad) -> None:
    await seed()
    poll = await _held(metad, instances, net.ip(1), "/self", metad.mirror.revision, 1)
    poll.cancel()
    await instances.sessions[net.ip(1)].close()
    del instances.sessions[net.ip(1)]
    # The server notices the closed socket on its own and cancels the held request.
    await asyncio.wait_for(metad.mirror.waiters.wait_until(lambda held: held == 0), DEADLINE)


async def _register_many(manage: MetadManagementClient, net, count: int) -> list[str]:
    """``count`` web instances in cluster c1 with mappings; returns their addresses."""
    ips = [
        f"127.102.{net.block}.{n}" if count <= 250 else f"127.{103 + n // 250}.{net.block}.{n % 250 + 1}"
        for n in range(1, count + 1)
    ]
    sem = asyncio.Semaphore(32)

    async def one(n: int, ip: str) -> None:
        async with sem:
            iid = f"i-many{n}"
            await manage.put_data(
                f"/clusters/c1/hosts/web/{iid}", {"instance_id": iid, "ip": ip, "role": "web"}
            )
            await manage.put_mapping(iid, {"cluster_id": "c1", "role": "web", "ip": ip})

    await asyncio.gather(*(one(n, ip) for n, ip in enumerate(ips)))
    return ips


async def release_many(metad: Metad, manage, instances, net, count: int) -> tuple[float, list[float]]:
    """Hold ``count`` long-polls from distinct instances, write once, time the answers (ms after it)."""
    ips = await _register_many(manage, net, count)
    await metad.mirror.wait_for_revision(await metad.store.revision())
    since = metad.mirror.revision
    loop = asyncio.get_running_loop()
    answered: list[float] = []

    async def poll(ip: str) -> int:
        status, env, headers = await instances.get(ip, "/self/env", wait="true", prev_version=since)
        answered.append(loop.time())
        assert status == 200 and env["workers"] == "16", (status, env)
        return int(headers["X-Metad-Version"])

    tasks = [asyncio.create_task(poll(ip)) for ip in ips]
    await asyncio.wait_for(metad.mirror.waiters.wait_for_count(count), 60)
    start = loop.time()
    changed = await manage.put_data("/clusters/c1/env/web/workers", 16)
    versions = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert set(versions) == {changed}
    return (max(answered) - start) * 1000, sorted((t - start) * 1000 for t in answered)


async def test_hundred_waiters_released_by_one_write(seed, instances, net, metad, manage) -> None:
    await seed()
    last_ms, _ = await release_many(metad, manage, instances, net, 100)
    assert last_ms < 5000


async def test_mirror_resync_replaces_state_and_wakes_everyone(seed, instances, net, metad, manage) -> None:
    await seed()
    poll = await _held(metad, instances, net.ip(1), "/self/env", metad.mirror.revision, 1)
    # What the store's watch delivers when the mirror's revision was compacted away: the full state.
    kvs, revision = await metad.store.get_prefix("/")
    kept = [kv for kv in kvs if not kv.key.startswith("/clusters/c1/env/web/workers")]
    await metad.mirror.apply(WatchBatch(revision=revision, resync=True, state=kept))
    status, env, headers = await asyncio.wait_for(poll, DEADLINE)
    assert status == 200 and env == {"port": "80"} and int(headers["X-Metad-Version"]) == revision
    assert metad.mirror.base_revision == revision
    # Identity survived the rebuild.
    status, host, _ = await instances.get(net.ip(2), "/self/host/instance_id")
    assert (status, host) == (200, "i-web2")


async def test_waiters_are_indexed_by_normal_paths_however_deps_are_spelled() -> None:
    index = WaiterIndex()
    waiter = Waiter(["clusters/c1/env//web/", "/clusters/c1/env/web", "/_pitrix/mapping/i-1"])
    assert sorted(waiter.deps) == ["/_pitrix/mapping/i-1", "/clusters/c1/env/web"]
    index.add(waiter)
    assert index.notify(["/clusters/c1/env/db/port"], 5) == 0
    assert index.notify(["/clusters/c1/env/web/port"], 6) == 1
    assert await waiter.future == 6 and len(index) == 0


class _Staying(Waiter):
    """A waiter that stays indexed between the requests it holds (as parking.Seat), woken only armed."""

    __slots__ = ("armed", "index", "woken")

    stays = True

    def __init__(self, index: WaiterIndex, deps: list[str]) -> None:
        self.deps = tuple(deps)
        self.index, self.armed, self.woken = index, False, []

    def wake(self, revision: int) -> bool:
        if not self.armed:
            return False
        self.armed = False
        self.index.disarm(self)
        self.woken.append(revision)
        return True


async def test_a_waiter_that_stays_is_counted_and_woken_only_while_armed() -> None:
    index = WaiterIndex()
    seat = _Staying(index, ["/clusters/c1/env/web", "/_pitrix/mapping/i-1"])
    other = Waiter(["/clusters/c1/env/web"])  # an ordinary waiter on a shared path
    index.register(seat)
    index.add(other)
    assert len(index) == 1  # registered, not holding anything
    assert index.notify(["/clusters/c1/env/web/port"], 5) == 1 and seat.woken == []
    assert await other.future == 5
    index.arm(seat)
    seat.armed = True
    assert len(index) == 1
    assert index.notify(["/clusters/c1/env/web/port"], 6) == 1 and seat.woken == [6]
    assert len(index) == 0  # disarmed by its wake-up, still indexed:
    index.arm(seat)
    seat.armed = True
    assert index.notify(["/_pitrix/mapping/i-1/ip"], 7) == 1 and seat.woken == [6, 7]
    index.arm(seat)
    seat.armed = True
    assert index.notify_all(8) == 1 and seat.woken == [6, 7, 8]
    index.arm(seat)
    seat.armed = True
    index.unregister(seat)  # its connection went: out of the count and the paths
    assert len(index) == 0 and index.notify(["/_pitrix/mapping/i-1/ip"], 9) == 0
    assert seat.woken == [6, 7, 8]
