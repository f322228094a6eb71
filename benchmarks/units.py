"""What the benchmark scripts share: sizes in decimal units, as pg_dump's and du's figures are read."""

from __future__ import annotations


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
