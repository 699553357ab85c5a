"""scripts/appcenter-check on a package of our own (checkpkg/): import, then the render comparison
with the Go peers absent, where the script must say the confd-yunify side was skipped and why and
still render the pitrix side (through a real pitrix-metad and pitrix-agent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SCRIPT = REPO / "scripts" / "appcenter-check"


def _importer_present() -> bool:
    try:
        import pitrix.appcenter.importer  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return False
    return True


def test_check_reports_import_and_skipped_comparison(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PITRIX_PEERS_SRC"] = str(tmp_path / "no-src")  # no Go source: nothing to build
    env["PITRIX_PEERS_CACHE"] = str(tmp_path / "no-cache")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    out = tmp_path / "check.json"
    done = subprocess.run(
        [
            sys.executable, "-W", "ignore", str(SCRIPT), "--no-deploy", "--json", str(out),
            "--source", str(HERE / "checkpkg"), "--workdir", str(tmp_path / "work"),
            str(HERE / "checkpkg" / "app"),
        ],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    [row] = json.loads(out.read_text())
    assert row["package"] == "tests/appcenter/checkpkg/app" or row["package"].endswith("app")
    if _importer_present():
        assert row["imported"] == "yes", row["imported_why"]
    else:
        assert row["imported"] == "no"
        assert "no importer" in row["imported_why"]
    details = {Path(d["template"]).name: d for d in row["details"]}
    assert set(details) == {"web.conf.toml", "missing.toml"}
    rendered = details["web.conf.toml"]
    assert rendered["outcome"] == "not-compared"
    assert "confd-yunify comparison skipped: no Go binaries: no source of" in rendered["detail"]
    assert rendered["detail"].endswith("pitrix-agent rendered it")
    assert details["missing.toml"]["detail"] == "template file not in the repository"
    # the table says the same, and the render really came from pitrix's metadata
    assert "confd-yunify comparison skipped" in done.stdout
    [agent_out] = (tmp_path / "work").glob("*/r000-web_node/agent-root/out/*-opt_web_conf_web.conf")
    text = agent_out.read_text()
    assert text.startswith("listen 127.78.1.10:8080\n"), text
    assert text.count("peer 127.78.1.") == 2, text
    assert agent_out.stat().st_mode & 0o777 == 0o640
