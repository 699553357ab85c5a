"""An AppCenter/OpenPitrix-style template set, rendered by agents through the real metad (and etcd).

A ZooKeeper cluster and a Kafka cluster (roles ``kafka`` and ``client``) linked to it, as an
AppCenter app would have them: role-scoped env, multi-role hosts, a link to another cluster, a
scale-in in progress. The images' confd files live in ``appcenter/<role>/``; every expected file
below was worked out by hand from the templates (whitespace trimming included), not produced by
the engine.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from agent_helpers import World

from pitrix.agent.agent import build_agent
from pitrix.agent.config import Overrides, load_config

IMAGES = Path(__file__).parent / "appcenter"


def addresses(world: World) -> dict[str, str]:
    base = world.ip.rsplit(".", 1)[0]
    names = {"zk1": 21, "zk2": 22, "zk10": 23, "zk4": 24, "k1": 31, "k2": 32, "c1": 41}
    return {name: f"{base}.{last}" for name, last in names.items()}


def host(iid: str, ip: str, sid: int, role: str) -> dict[str, Any]:
    return {"instance_id": iid, "ip": ip, "sid": str(sid), "role": role, "cpu": "2", "memory": "4096"}


async def publish(world: World, ip: dict[str, str]) -> None:
    zk_hosts = {
        "i-zk1": host("i-zk1", ip["zk1"], 1, "zk"),
        "i-zk2": host("i-zk2", ip["zk2"], 2, "zk"),
        "i-zk10": host("i-zk10", ip["zk10"], 3, "zk"),
    }
    await world.manage.post_data(
        "/clusters/cl-zk",
        {
            "cluster": {"cluster_id": "cl-zk", "app_version": "3.8.4", "owner": "usr-1"},
            "hosts": {"zk": zk_hosts},
            "env": {
                "zk": {
                    "initLimit": "20",
                    "autopurge.enable": "true",
                    "peer.port": "2890",
                    "4lw.commands.whitelist": "srvr mntr ruok",
                }
            },
            "endpoints": {"client": {"port": "2182", "protocol": "tcp"}},
        },
    )
    await world.manage.post_data(
        "/clusters/cl-kfk",
        {
            "cluster": {"cluster_id": "cl-kfk", "owner": "usr-1"},
            "hosts": {
                "kafka": {
                    "i-k1": host("i-k1", ip["k1"], 1, "kafka"),
                    "i-k2": host("i-k2", ip["k2"], 2, "kafka"),
                },
                "client": {"i-c1": host("i-c1", ip["c1"], 1, "client")},
            },
            "env": {
                "kafka": {
                    "num.partitions": "6",
                    "log.retention.days": "3",
                    "log.dirs": "/data/k1;/data/k2",
                    "auth": "SASL",
                    "client.name": "not-the-client-role's",
                    "custom": {"message.max.bytes": "2000000", "compression.type": "lz4"},
                },
                "client": {"client.name": "mgr"},
            },
            "deleting-hosts": {"kafka": {"i-k2": host("i-k2", ip["k2"], 2, "kafka")}},
            "links": {"zk_service": "cl-zk"},
        },
    )
    for cid, role, iid, name in [
        ("cl-zk", "zk", "i-zk2", "zk2"),
        ("cl-kfk", "kafka", "i-k1", "k1"),
        ("cl-kfk", "client", "i-c1", "c1"),
    ]:
        await world.manage.put_mapping(iid, {"cluster_id": cid, "role": role, "ip": ip[name]})


async def render_as(world: World, root: Path, image: str, ip: str) -> bool:
    """One ``-onetime`` agent run on a VM built from ``image``, as instance ``ip``."""
    shutil.copytree(IMAGES / image, root / "etc/confd", dirs_exist_ok=True)
    config = load_config(
        root,
        None,
        Overrides(backend="metad", nodes=[world.metad.instance_url], onetime=True),
        environ={"PITRIX_VM_IP": ip},
    )
    agent = build_agent(config, announce=lambda _i: None)
    try:
        return await agent.run_onetime()
    finally:
        await agent.close()


async def test_zookeeper_kafka_set(world: World, tmp_path: Path) -> None:
    ip = addresses(world)
    await publish(world, ip)

    zk = tmp_path / "zk2"
    assert await render_as(world, zk, "zk", ip["zk2"])
    assert (zk / "opt/zookeeper/conf/zoo.cfg").read_text() == (
        "# ZooKeeper cl-zk (3.8.4)\n"
        "tickTime=2000\n"
        "initLimit=20\n"
        "syncLimit=5\n"
        "dataDir=/data/zookeeper\n"
        "clientPort=2181\n"
        "maxClientCnxns=60\n"
        "autopurge.snapRetainCount=3\n"
        "autopurge.purgeInterval=1\n"
        "\n"
        # lsdir sorts names as strings: i-zk1, i-zk10, i-zk2.
        f"server.1={ip['zk1']}:2890:3890\n"
        f"server.3={ip['zk10']}:2890:3890\n"
        f"server.2={ip['zk2']}:2890:3890 # self\n"
        "4lw.commands.whitelist=srvr,mntr,ruok\n"
    )
    myid = zk / "data/zookeeper/myid"
    assert myid.read_text() == "2\n" and myid.stat().st_mode & 0o777 == 0o600
    assert (zk / "reloads.log").read_text() == "zoo.cfg\n"
    assert not (zk / "nowhere").exists()  # _disabled.toml was skipped

    kafka = tmp_path / "k1"
    assert await render_as(world, kafka, "kafka", ip["k1"])
    assert (kafka / "opt/kafka/config/server.properties").read_text() == (
        "broker.id=1\n"
        f"listeners=PLAINTEXT://{ip['k1']}:9092\n"
        "num.partitions=6\n"
        "default.replication.factor=2\n"
        "log.retention.hours=72\n"
        "log.dirs=/data/k1,/data/k2\n"
        f"zookeeper.connect={ip['zk1']}:2182,{ip['zk10']}:2182,{ip['zk2']}:2182/kafka/cl-kfk\n"
        "sasl.enabled.mechanisms=PLAIN\n"
        "security.inter.broker.protocol=SASL_PLAINTEXT\n"
        "compression.type=lz4\n"
        "message.max.bytes=2000000\n"
        "\n"
        "# leaving: i-k2\n"
    )

    client = tmp_path / "c1"
    assert await render_as(world, client, "client", ip["c1"])
    assert (client / "etc/kafka-client/client.properties").read_text() == (
        f"bootstrap.servers={ip['k1']}:9092,{ip['k2']}:9092\n"
        "client.id=cl-kfk-mgr\n"  # the client role's env, not the kafka role's
        "request.timeout.ms=30000\n"
    )

    # The ZooKeeper cluster scales out and turns autopurge off; the zk node re-renders, the
    # broker's link follows, and the unchanged myid is left alone.
    await world.manage.put_data(
        "/clusters/cl-zk", {"hosts": {"zk": {"i-zk4": host("i-zk4", ip["zk4"], 4, "zk")}}}
    )
    await world.manage.put_data(
        "/clusters/cl-zk/env/zk", {"autopurge.enable": None, "4lw.commands.whitelist": None}
    )
    await world.manage.put_data("/clusters/cl-kfk/env/kafka", {"auth": "plain"})
    before = myid.stat().st_mtime_ns
    assert await render_as(world, zk, "zk", ip["zk2"])
    assert (zk / "opt/zookeeper/conf/zoo.cfg").read_text().split("maxClientCnxns=60\n")[1] == (
        "\n"
        f"server.1={ip['zk1']}:2890:3890\n"
        f"server.3={ip['zk10']}:2890:3890\n"
        f"server.2={ip['zk2']}:2890:3890 # self\n"
        f"server.4={ip['zk4']}:2890:3890\n"
        "4lw.commands.whitelist=srvr,mntr\n"
    )
    assert myid.stat().st_mtime_ns == before
    assert await render_as(world, kafka, "kafka", ip["k1"])
    text = (kafka / "opt/kafka/config/server.properties").read_text()
    assert f",{ip['zk4']}:2182/kafka/cl-kfk\n" in text and "sasl" not in text


async def test_check_cmd_keeps_a_broken_link_out(world: World, tmp_path: Path) -> None:
    """The broker's check_cmd refuses a server.properties without ZooKeeper: with the link gone
    the agent fails the resource and the file on disk stays as it was."""
    ip = addresses(world)
    await publish(world, ip)
    kafka = tmp_path / "k1"
    assert await render_as(world, kafka, "kafka", ip["k1"])
    dest = kafka / "opt/kafka/config/server.properties"
    good = dest.read_text()
    await world.manage.delete_data("/clusters/cl-kfk/links")
    assert await render_as(world, kafka, "kafka", ip["k1"]) is False
    assert dest.read_text() == good
    assert (kafka / "reloads.log").read_text() == "server.properties\n"
