"""The image builder joins numbered template parts lying beside the one source no file holds
(etcd's layout: ``make.sh.toml`` names ``make.sh.tmpl``, the package ships ``01.header.sh.tmpl``
and ``02.app.env.tmpl``), and guesses nothing when two sources are missing."""

from __future__ import annotations

from pathlib import Path

from simulator.appcenter_image import ImageRecipe, build_image


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
