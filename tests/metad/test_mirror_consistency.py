"""The mirror equals etcd after any sequence of management writes (seeded random sequences)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pitrix.metad.client import MetadManagementClient
from pitrix.metad.server import Metad
from pitrix.metad.tree import Tree
from pitrix.store import Store

NAMES = ["a", "b", "c"]


def _doc(rng: random.Random, depth: int) -> Any:
    if depth == 0 or rng.random() < 0.3:
        return rng.choice(["x", "y", 1, True, None]) if depth else rng.choice(["x", 2])
    return {rng.choice(NAMES): _doc(rng, depth - 1) for _ in range(rng.randint(1, 3))}


@pytest.mark.parametrize("seed_value", [1, 2, 3])
async def test_mirror_matches_etcd_after_random_writes(
    seed_value: int, manage: MetadManagementClient, metad: Metad, store: Store
) -> None:
    rng = random.Random(seed_value)
    for _ in range(60):
        path = "/" + "/".join(rng.choice(NAMES) for _ in range(rng.randint(1, 3)))
        action = rng.choice(["put", "put", "post", "delete"])
        doc = _doc(rng, 3)
        if action == "put":
            await manage.put_data(path, doc)  # null deletes
        elif action == "post":
            if not isinstance(doc, dict):
                doc = {"leaf": doc if doc is not None else "z"}
            await manage.post_data(path, doc)
        else:
            await manage.delete_data(path)
        kvs, revision = await store.get_prefix("/")
        await metad.mirror.wait_for_revision(revision)
        fresh = Tree()
        for kv in kvs:
            fresh.put(kv.key, kv.text, kv.mod_revision)
        assert metad.mirror.tree.root.obj() == fresh.root.obj(), (action, path, doc)
        assert metad.mirror.tree.root.json() == fresh.root.json()
        # A key is never both a leaf and a directory.
        keys = {kv.key for kv in kvs}
        assert not any(k.startswith(other + "/") for k in keys for other in keys), sorted(keys)
