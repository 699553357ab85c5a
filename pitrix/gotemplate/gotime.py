"""The value confd's ``datetime`` returns: a Go ``time.Time`` with Go's layout-based ``Format``.

Templates call ``{{(datetime).Format "2006-01-02"}}`` or ``{{datetime.Unix}}``; the reference-time
layout (Mon Jan 2 15:04:05 MST 2006) is translated here, not Python's strftime.
"""

from __future__ import annotations

import datetime as _dt

_MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _offset(t: _dt.datetime, colon: bool, seconds: bool, z: bool, hours_only: bool = False) -> str:
    delta = t.utcoffset() or _dt.timedelta(0)
    total = int(delta.total_seconds())
    if z and total == 0:
        return "Z"
    sign = "-" if total < 0 else "+"
    total = abs(total)
    hh, mm, ss = total // 3600, total // 60 % 60, total % 60
    if hours_only:
        return f"{sign}{hh:02d}"
    sep = ":" if colon else ""
    out = f"{sign}{hh:02d}{sep}{mm:02d}"
    if seconds:
        out += f"{sep}{ss:02d}"
    return out


def _zone_name(t: _dt.datetime) -> str:
    name = t.tzname()
    if name and name.isalpha():
        return name
    return _offset(t, colon=False, seconds=False, z=False)


def _fraction(t: _dt.datetime, digits: int, trim: bool, sep: str) -> str:
    ns = f"{t.microsecond:06d}000"[:digits]
    if trim:
        ns = ns.rstrip("0")
        return sep + ns if ns else ""
    return sep + ns


# (layout token, formatter), longest and most specific first where prefixes overlap
_TOKENS: list[tuple[str, object]] = [
    ("January", lambda t: _MONTHS[t.month - 1]),
    ("Jan", lambda t: _MONTHS[t.month - 1][:3]),
    ("Monday", lambda t: _DAYS[t.weekday()]),
    ("Mon", lambda t: _DAYS[t.weekday()][:3]),
    ("MST", _zone_name),
    ("2006", lambda t: f"{t.year:04d}"),
    ("002", lambda t: f"{t.timetuple().tm_yday:03d}"),
    ("01", lambda t: f"{t.month:02d}"),
    ("02", lambda t: f"{t.day:02d}"),
    ("03", lambda t: f"{(t.hour % 12) or 12:02d}"),
    ("04", lambda t: f"{t.minute:02d}"),
    ("05", lambda t: f"{t.second:02d}"),
    ("06", lambda t: f"{t.year % 100:02d}"),
    ("15", lambda t: f"{t.hour:02d}"),  # Go pads the 24-hour clock: 07, not 7
    ("1", lambda t: str(t.month)),
    ("__2", lambda t: f"{t.timetuple().tm_yday:>3d}"),
    ("_2", lambda t: f"{t.day:>2d}"),
    ("2", lambda t: str(t.day)),
    ("3", lambda t: str((t.hour % 12) or 12)),
    ("4", lambda t: str(t.minute)),
    ("5", lambda t: str(t.second)),
    ("PM", lambda t: "PM" if t.hour >= 12 else "AM"),
    ("pm", lambda t: "pm" if t.hour >= 12 else "am"),
    ("-07:00:00", lambda t: _offset(t, True, True, False)),
    ("-070000", lambda t: _offset(t, False, True, False)),
    ("-07:00", lambda t: _offset(t, True, False, False)),
    ("-0700", lambda t: _offset(t, False, False, False)),
    ("-07", lambda t: _offset(t, False, False, False, hours_only=True)),
    ("Z07:00:00", lambda t: _offset(t, True, True, True)),
    ("Z070000", lambda t: _offset(t, False, True, True)),
    ("Z07:00", lambda t: _offset(t, True, False, True)),
    ("Z0700", lambda t: _offset(t, False, False, True)),
    ("Z07", lambda t: _offset(t, False, False, True, hours_only=True)),
]


def go_format(t: _dt.datetime, layout: str) -> str:
    """``time.Time.Format(layout)``."""
    out: list[str] = []
    i, n = 0, len(layout)
    while i < n:
        c = layout[i]
        if c in ".," and i + 1 < n and layout[i + 1] in "09":
            d = layout[i + 1]
            j = i + 1
            while j < n and layout[j] == d:
                j += 1
            if not (j < n and layout[j].isdigit()):
                out.append(_fraction(t, j - i - 1, d == "9", c))
                i = j
                continue
        for token, fn in _TOKENS:
            if layout.startswith(token, i):
                out.append(fn(t))  # type: ignore[operator]
                i += len(token)
                break
        else:
            out.append(c)
            i += 1
    return "".join(out)


class GoTime:
    """A point in time with a time zone, offering ``time.Time``'s common methods."""

    go_type = "time.Time"

    def __init__(self, t: _dt.datetime) -> None:
        self.t = t if t.tzinfo is not None else t.astimezone()

    @classmethod
    def now(cls) -> GoTime:
        return cls(_dt.datetime.now().astimezone())

    def Format(self, layout: str) -> str:
        return go_format(self.t, layout)

    def String(self) -> str:
        return go_format(self.t, "2006-01-02 15:04:05.999999999 -0700 MST")

    def Unix(self) -> int:
        return int(self.t.timestamp())

    def UnixNano(self) -> int:
        return int(self.t.timestamp()) * 1_000_000_000 + self.t.microsecond * 1000

    def Year(self) -> int:
        return self.t.year

    def Month(self) -> int:
        return self.t.month

    def Day(self) -> int:
        return self.t.day

    def Hour(self) -> int:
        return self.t.hour

    def Minute(self) -> int:
        return self.t.minute

    def Second(self) -> int:
        return self.t.second

    def Nanosecond(self) -> int:
        return self.t.microsecond * 1000

    def YearDay(self) -> int:
        return self.t.timetuple().tm_yday

    def Weekday(self) -> str:
        return _DAYS[self.t.weekday()]

    def UTC(self) -> GoTime:
        return GoTime(self.t.astimezone(_dt.UTC))

    def Local(self) -> GoTime:
        return GoTime(self.t.astimezone())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GoTime) and self.t == other.t

    def __hash__(self) -> int:
        return hash(self.t)
