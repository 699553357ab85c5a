"""docs/config.md documents every key pitrixd accepts (a key added without a line fails here)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from pitrix.settings import ApiSettings, EtcdSettings, SecretsSettings, Settings, TokenEntry

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    models: list[type[BaseModel]] = [Settings, EtcdSettings, ApiSettings, TokenEntry, SecretsSettings]
    for model in models:
        for name in model.model_fields:
            if name in ("etcd", "api", "secrets"):
                assert f"[{name}]" in text, name
            else:
                documented = re.search(rf"^{name} = ", text, re.MULTILINE) or f"[[api.{name}]]" in text
                assert documented, f"{model.__name__}.{name}"
