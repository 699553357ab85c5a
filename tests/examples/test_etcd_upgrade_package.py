"""The etcd-cluster package's later versions without a cloud: each declares the way up from the
one before, the in-place version's tuning template passes its new parameter to etcd, and the
replace version's image carries the same etcd-node script as the first image."""

from __future__ import annotations

from pathlib import Path

from test_etcd_cluster_package import HOSTS, parse_env, render

from pitrix.runtime.spec import load_spec

PACKAGE = Path(__file__).resolve().parents[2] / "examples" / "etcd-cluster"


def test_each_version_declares_its_way_up_from_the_one_before() -> None:
    first, in_place, replace = (
        load_spec(PACKAGE / n) for n in ("app.yaml", "app-3.4.1.yaml", "app-3.5.0.yaml")
    )
    assert first.name == in_place.name == replace.name
    assert in_place.upgrade is not None and in_place.upgrade.policy == "in_place"
    assert in_place.upgrade.allows(first.version) and not in_place.upgrade.allows(replace.version)
    assert replace.upgrade is not None and replace.upgrade.policy == "replace"
    assert replace.upgrade.allows(first.version) and replace.upgrade.allows(in_place.version)
    assert replace.roles[0].image != first.roles[0].image
    for spec in (in_place, replace):
        assert {"upgrade", "rollback"} <= set(spec.roles[0].services)
        assert spec.roles[0].volume == first.roles[0].volume  # replace re-attaches the same volumes


def test_the_new_parameter_reaches_etcd_through_the_tuning_template() -> None:
    spec = load_spec(PACKAGE / "app-3.4.1.yaml")
    view = {"host": {**HOSTS["i-1"], "env": {"max-request-bytes": "4096"}}}
    assert parse_env(render(spec, "etcd-tuning", view))["MAX_REQUEST_BYTES"] == "4096"
    assert parse_env(render(spec, "etcd-tuning", {"host": HOSTS["i-1"]}))["MAX_REQUEST_BYTES"] == "2097152"


def test_the_replace_image_runs_the_same_script() -> None:
    script = "opt/etcd/bin/etcd-node"
    assert (PACKAGE / "images/etcd-r2" / script).read_bytes() == (
        PACKAGE / "images/etcd" / script
    ).read_bytes()
    assert (PACKAGE / "images/etcd-r2/opt/etcd/release").read_text() == "etcd-r2\n"
