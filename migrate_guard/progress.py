"""Progress of long backups and restores: a rich bar on a terminal, plain lines otherwise, nothing for JSON."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any


class Progress:
    """Silent; the base of the others. Use cases call ``step``, ``stream`` and ``counted``."""

    def step(self, message: str) -> None:
        """A phase begins (``taking a snapshot of the current state``)."""

    def stream(self, name: str) -> None:
        """A table (or the schema) starts streaming."""

    def counted(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Pass ``chunks`` through, counting bytes."""
        yield from chunks

    def set_total(self, total: int | None) -> None:
        """Bytes expected in all, when known (restores)."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LineProgress(Progress):
    """A line per phase and per stream on stderr, and the bytes moved at the end (streams may be
    read in parallel, so bytes are not attributed to one of them)."""

    def __init__(self) -> None:
        self.bytes = 0
        self.started = time.monotonic()

    def step(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def stream(self, name: str) -> None:
        print(f"  {name}", file=sys.stderr, flush=True)

    def counted(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes += len(chunk)
            yield chunk

    def close(self) -> None:
        if self.bytes:
            seconds = max(time.monotonic() - self.started, 1e-6)
            print(f"  {human_bytes(self.bytes)} in {seconds:.1f}s", file=sys.stderr, flush=True)


class BarProgress(Progress):
    """A rich progress bar: current table, bytes, throughput, and the total when known."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        self.bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.bar.start()
        self.task = self.bar.add_task("starting", total=None)

    def step(self, message: str) -> None:
        self.bar.console.print(message)
        self.bar.update(self.task, description=message)

    def stream(self, name: str) -> None:
        self.bar.update(self.task, description=name)

    def set_total(self, total: int | None) -> None:
        self.bar.update(self.task, total=total, completed=0)

    def counted(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bar.advance(self.task, len(chunk))
            yield chunk

    def close(self) -> None:
        self.bar.stop()


def for_output(machine_readable: bool) -> Progress:
    """The right kind for this run: none under --format json, a bar on a terminal, lines otherwise."""
    if machine_readable:
        return Progress()
    if sys.stderr.isatty():
        try:
            return BarProgress()
        except ImportError:  # rich is optional at run time
            pass
    return LineProgress()


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
