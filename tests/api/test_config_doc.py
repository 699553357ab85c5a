"""docs/config.md documents every key pitrixd accepts (a key added without a line fails here)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from pitrix.settings import (
    ApiSettings,
    EtcdSettings,
    RecoverySettings,
    RuntimeSettings,
    SecretsSettings,
    Settings,
    StepRetrySettings,
    TokenEntry,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "config.md"
SECTIONS = {
    "etcd": "[etcd]",
    "api": "[api]",
    "secrets": "[secrets]",
    "runtime": "[runtime]",
    "recovery": "[runtime.recovery]",
    "step_retry": "[runtime.step_retry]",
}


def test_every_setting_is_documented() -> None:
    text = DOC.read_text()
    models: list[type[BaseModel]] = [
        Settings,
        EtcdSettings,
        ApiSettings,
        TokenEntry,
        SecretsSettings,
        RuntimeSettings,
        RecoverySettings,
        StepRetrySettings,
    ]
    for model in models:
        for name in model.model_fields:
            if name in SECTIONS:
                assert re.search(rf"^{re.escape(SECTIONS[name])}", text, re.MULTILINE), name
            else:
                documented = re.search(rf"^{name} = ", text, re.MULTILINE) or f"[[api.{name}]]" in text
                assert documented, f"{model.__name__}.{name}"
