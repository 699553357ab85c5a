"""The image builder joins numbered template parts lying beside the one source no file holds
(etcd's layout: ``make.sh.toml`` names ``make.sh.tmpl``, the package ships ``01.header.sh.tmpl``
and ``02.app.env.tmpl``), and guesses nothing when two sources are missing; optional shims and
the package's accounts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from simulator.appcenter_image import SHIMS_DIR, ImageError, ImageRecipe, build_image


def package(tmp_path: Path, sources: list[str]) -> Path:
    confd = tmp_path / "pkg" / "ansible" / "files" / "etc" / "confd"
    (confd / "conf.d").mkdir(parents=True)
    (confd / "templates").mkdir()
    for src in sources:
        (confd / "conf.d" / f"{src}.toml").write_text(f'[template]\nsrc = "{src}"\ndest = "/x/{src}"\n')
    (confd / "templates" / "02.body.tmpl").write_text('body {{getv "/host/ip"}}')
    (confd / "templates" / "01.head.tmpl").write_text("#!/bin/sh")
    return tmp_path / "pkg"


def test_loose_parts_become_the_missing_source(tmp_path: Path) -> None:
    image = build_image(
        ImageRecipe(package=package(tmp_path, ["make.sh.tmpl"]), name="one"), tmp_path / "out"
    )
    joined = image / "etc/confd/templates/make.sh.tmpl"
    assert joined.read_text() == '#!/bin/sh\nbody {{getv "/host/ip"}}\n'
    assert "make.sh.tmpl from 2 parts" in (image / "README.md").read_text()


def test_two_missing_sources_are_not_guessed_at(tmp_path: Path) -> None:
    image = build_image(
        ImageRecipe(package=package(tmp_path, ["a.tmpl", "b.tmpl"]), name="two"), tmp_path / "out"
    )
    assert not (image / "etc/confd/templates/a.tmpl").exists()
    assert not (image / "etc/confd/templates/b.tmpl").exists()


def test_optional_shims_and_accounts(tmp_path: Path) -> None:
    """``--shim zookeeper`` puts our zkEnv.sh beside links to Debian's scripts, where a release
    tree's are; ``--user``/``--group`` add the accounts the package's ansible creates to the
    host's (which the image's /etc/passwd and /etc/group replace in the VM)."""
    image = build_image(
        ImageRecipe(
            package=package(tmp_path, ["make.sh.tmpl"]),
            name="zk",
            shims=["zookeeper", "caddy"],
            groups=["svc"],
            users=["zookeeper-test-user:svc", "root:svc"],
        ),
        tmp_path / "out",
    )
    bin_dir = image / "opt/zookeeper/current/bin"
    assert (bin_dir / "zkEnv.sh").read_text() == (SHIMS_DIR / "zkEnv.sh").read_text()
    assert os.readlink(bin_dir / "zkServer.sh") == "/usr/share/zookeeper/bin/zkServer.sh"
    assert os.access(image / "opt/caddy/current/caddy", os.X_OK)
    passwd = (image / "etc/passwd").read_text().splitlines()
    group = {line.split(":")[0]: line.split(":") for line in (image / "etc/group").read_text().splitlines()}
    host_passwd = Path("/etc/passwd").read_text().splitlines()
    assert passwd[: len(host_passwd)] == host_passwd  # the host's accounts stay, in order
    [added] = [line.split(":") for line in passwd if line.startswith("zookeeper-test-user:")]
    assert int(added[2]) >= 900 and added[3] == group["zookeeper-test-user"][2]  # its own group
    assert group["svc"][3].split(",") == ["zookeeper-test-user", "root"]
    assert sum(1 for line in passwd if line.startswith("root:")) == 1  # existing users only join
    readme = (image / "README.md").read_text()
    assert "Account: root joins svc." in readme and "Shim zookeeper:" in readme


def test_an_unknown_shim_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="unknown shim 'nginx'"):
        build_image(
            ImageRecipe(package=package(tmp_path, ["make.sh.tmpl"]), name="x", shims=["nginx"]),
            tmp_path / "out",
        )


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs a POSIX shell")
def test_zkenv_takes_the_callers_environment(tmp_path: Path) -> None:
    """Debian's zkServer.sh sources zkEnv.sh from its own folder; ours keeps what the unit set
    (the package's conf folder, log folder) and reads that folder's java.env, as ZooKeeper's
    release does, so the package's zoo.cfg is the one served."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "java.env").write_text('SERVER_JVMFLAGS="-Dx=1"\nZK_SERVER_HEAP=934\n')
    env = {
        "PATH": os.environ["PATH"],
        "ZOOCFGDIR": str(conf),
        "ZOO_LOG_DIR": "/data/zookeeper/logs",
        "JAVA_HOME": str(tmp_path / "no-such-jdk"),
    }
    script = f'. {SHIMS_DIR / "zkEnv.sh"}; echo "$ZOOCFG|$ZOO_LOG_DIR|$JAVA|$SERVER_JVMFLAGS|$CLASSPATH"'
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip().split("|") == [
        f"{conf}/zoo.cfg",
        "/data/zookeeper/logs",
        "/usr/bin/java",  # the JDK the package names is not here: Debian's java
        "-Xmx934m -Dx=1",
        f"{conf}:/usr/share/java/zookeeper.jar",
    ]
    (conf / "log4j.properties").write_text("log4j.rootLogger=INFO, CONSOLE\n")  # a 3.4 package's
    bound = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    jars = ["/usr/share/java/slf4j-log4j12.jar", "/usr/share/java/log4j-1.2.jar"]
    if all(Path(jar).is_file() for jar in jars):  # Debian's log4j binding, when installed
        assert bound.strip().endswith(f"{conf}:/usr/share/java/zookeeper.jar:{':'.join(jars)}")
    else:
        assert bound == out
    plain = subprocess.run(
        ["sh", "-c", script], env={"PATH": os.environ["PATH"]}, capture_output=True, text=True
    )
    assert plain.stdout.startswith("/etc/zookeeper/conf/zoo.cfg|/var/log/zookeeper|")  # Debian's defaults
