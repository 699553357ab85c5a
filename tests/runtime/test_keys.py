"""pitrixd's record keys: the layout it has always stored, byte for byte, and one parser for them."""

from __future__ import annotations

import pytest

from pitrix.runtime import keys, ownership, records
from pitrix.runtime.keys import Key

ODD_IDS = ["cl-3f9a1c0b", "web-1", "j.a_b:c~d", "ünï", "with space", "%2F", "init:web+db:post-start"]


def test_keys_are_the_stored_layout() -> None:
    assert keys.cluster_key("c") == "/clusters/c"
    assert keys.node_key("c", "web-1") == "/cluster-data/c/nodes/web-1"
    assert keys.job_key("c", "j") == "/cluster-data/c/jobs/j"
    assert keys.step_key("c", "j", "init:web") == "/cluster-data/c/steps/j/init:web"
    assert keys.token_key("c", "web-1") == "/cluster-data/c/tokens/web-1"
    assert keys.owner_key("c") == "/owners/c"
    assert keys.runtime_key("sim") == "/runtimes/sim"
    assert keys.metadata_key("o", "sim") == "/metadata-clusters/o/sim"
    assert keys.keypair_key("o", "sim") == "/keypairs/o/sim"
    assert keys.cluster_data_prefix("c") == "/cluster-data/c/"
    assert keys.nodes_prefix("c") == keys.cluster_data_prefix("c") + "nodes/"
    assert keys.jobs_prefix("c") == keys.cluster_data_prefix("c") + "jobs/"
    assert keys.tokens_prefix("c") == keys.cluster_data_prefix("c") + "tokens/"
    assert keys.steps_prefix("c", "j") == keys.step_key("c", "j", "")
    # One watch of the records prefix sees clusters and their data alike.
    assert keys.cluster_key("c").startswith(keys.CLUSTER_RECORDS)
    assert keys.job_key("c", "j").startswith(keys.CLUSTER_RECORDS)


def test_the_modules_that_build_keys_use_these() -> None:
    """One home for the key builders: records and ownership use them, and keep no copies."""
    assert records.runtime_key is keys.runtime_key and records.metadata_key is keys.metadata_key
    assert ownership.owner_key is keys.owner_key


@pytest.mark.parametrize("a", ODD_IDS)
@pytest.mark.parametrize("b", ODD_IDS)
def test_every_key_parses_back(a: str, b: str) -> None:
    assert keys.parse(keys.cluster_key(a)) == Key("cluster", cluster_id=a)
    assert keys.parse(keys.node_key(a, b)) == Key("node", cluster_id=a, node_id=b)
    assert keys.parse(keys.token_key(a, b)) == Key("token", cluster_id=a, node_id=b)
    assert keys.parse(keys.job_key(a, b)) == Key("job", cluster_id=a, job_id=b)
    assert keys.parse(keys.step_key(a, b, "init:web+db")) == Key(
        "step", cluster_id=a, job_id=b, step="init:web+db"
    )
    assert keys.parse(keys.owner_key(a)) == Key("owner", cluster_id=a)
    assert keys.parse(keys.runtime_key(a)) == Key("runtime", name=a)
    assert keys.parse(keys.metadata_key(a, b)) == Key("metadata", owner=a, runtime=b)
    assert keys.parse(keys.keypair_key(a, b)) == Key("keypair", owner=a, runtime=b)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/",
        "clusters/c",
        "/clusters",
        "/clusters/",
        "/clusters/c/",
        "/clusters/c/x",
        "/cluster-data/c",
        "/cluster-data/c/nodes",
        "/cluster-data/c/nodes/",
        "/cluster-data/c/nodes/a/b",
        "/cluster-data/c/jobs/j/x",
        "/cluster-data/c/steps/j",
        "/cluster-data/c/steps/j/",
        "/cluster-data/c/steps/j/a/b",
        "/cluster-data/c/other/x",
        "/cluster-data//nodes/a",
        "/owners/",
        "/owners/c/x",
        "/runtimes/a/b",
        "/metadata-clusters/o",
        "/keypairs/o/r/x",
        "/pitrix/ca",
        "/secrets/sealed-v1",
        "/_locks/x",
    ],
)
def test_a_key_of_no_record_parses_to_none(key: str) -> None:
    assert keys.parse(key) is None
