"""What an import did with each field of the package: mapped, approximated or dropped, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["mapped", "approximated", "dropped"]


@dataclass(frozen=True)
class ReportLine:
    field: str
    outcome: Outcome
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Conversion:
    """An imported package: the pitrix spec (valid for ``parse_spec``) and the report of each field."""

    spec: dict[str, Any]
    report: list[ReportLine] = field(default_factory=list)

    def add(self, field_: str, outcome: Outcome, note: str = "") -> None:
        self.report.append(ReportLine(field_, outcome, note))

    def lines(self, outcome: Outcome) -> list[ReportLine]:
        return [line for line in self.report if line.outcome == outcome]

    def report_text(self) -> str:
        """One line per field, then the totals: what a person reads after ``pitrix apps import``."""
        width = max((len(line.field) for line in self.report), default=5)
        rows = [f"{line.outcome:<12} {line.field:<{width}}  {line.note}".rstrip() for line in self.report]
        outcomes: tuple[Outcome, ...] = ("mapped", "approximated", "dropped")
        counts = ", ".join(f"{len(self.lines(o))} {o}" for o in outcomes)
        return "\n".join([*rows, counts])
