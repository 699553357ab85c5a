"""``pitrix apps import DIR``: the package read from disk, converted by pitrixd, the report printed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cli_helpers import Run

PACKAGES = Path(__file__).resolve().parents[1] / "appcenter" / "packages"


async def test_apps_import_prints_the_report_and_registers(cli: Run, tmp_path: Path) -> None:
    code, out, err = await cli("apps", "import", str(PACKAGES / "duo"), "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1] == "app duo-store 1.0.0 converted (dry run, not registered)"
    assert any(line.split()[:2] == ["dropped", "console_theme"] for line in lines)
    assert any(line.split()[:2] == ["approximated", "nodes.data_node.services.repairNode"] for line in lines)

    args = ["--image", "*=img-sim", "--image", "route_proxy=img-proxy", "--name", "duo", "--version", "2.0"]
    code, out, err = await cli("-o", "json", "apps", "import", str(PACKAGES / "duo"), *args)
    assert code == 0, err
    data = json.loads(out)
    assert (data["app"], data["version"], data["dry_run"]) == ("duo", "2.0", False)
    code, out, err = await cli("-o", "json", "apps", "show", "duo")
    spec = json.loads(out)["spec"]
    assert [r["image"] for r in spec["roles"]] == ["img-sim", "img-proxy"] and spec["profile"] == "appcenter"


async def test_apps_import_of_a_bad_package_says_which_file(cli: Run, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(PACKAGES / "solo", package)
    (package / "config.json").unlink()
    code, _, err = await cli("apps", "import", str(package))
    assert code == 2 and "config.json: missing" in err
    shutil.copy(PACKAGES / "solo" / "config.json", package)
    (package / "cluster.json.mustache").write_text('{"name": {{cluster.name}} "nodes": []}')
    code, _, err = await cli("apps", "import", str(package))
    assert code == 2 and "cluster.json.mustache: does not parse as JSON once filled in" in err
