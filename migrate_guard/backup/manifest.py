"""What a snapshot manifest names: every blob of its streams (schema, tables, files), in one place for
everything that must not miss one (verify, prune's garbage collection, repair, rekey, lost data)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def contents(manifest: dict[str, Any]) -> list[str]:
    """What a snapshot holds: ``["database", "files"]``, ``["database"]`` or ``["files"]``; a manifest
    written before files were backed up holds its database."""
    held = manifest.get("contents")
    return held if isinstance(held, list) else ["database"]


def holds_database(manifest: dict[str, Any]) -> bool:
    """Whether a snapshot holds its database (all do but a `backup --only-files` one)."""
    return "database" in contents(manifest)


def holds_files(manifest: dict[str, Any]) -> bool:
    """Whether a snapshot holds files (its ``files`` section)."""
    return isinstance(manifest.get("files"), dict)


def file_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's file entries (``files.entries``; none in a snapshot without files)."""
    section = manifest.get("files")
    entries = section.get("entries") if isinstance(section, dict) else None
    return entries if isinstance(entries, list) else []


def manifest_blobs(manifest: dict[str, Any]) -> Iterator[str]:
    """Every blob the manifest names, streams in order: the schema, each table, each file."""
    yield from manifest["schema"]["blobs"]
    for table in manifest["tables"]:
        yield from table["blobs"]
    for entry in file_entries(manifest):
        yield from entry.get("blobs", ())


def blob_owners(manifest: dict[str, Any]) -> dict[str, list[str]]:
    """Which streams hold each blob: ``schema``, ``table customers``, ``file media/a.png`` (what a
    damaged blob has cost, in words)."""
    owners: dict[str, list[str]] = {}

    def own(blobs: Any, what: str) -> None:
        for b in blobs:
            names = owners.setdefault(b, [])
            if what not in names:
                names.append(what)

    own(manifest["schema"]["blobs"], "schema")
    for table in manifest["tables"]:
        own(table["blobs"], f"table {table['name']}")
    for entry in file_entries(manifest):
        own(entry.get("blobs", ()), f"file {entry.get('path')}")
    return owners


def with_blobs_renamed(manifest: dict[str, Any], new: Callable[[str], str]) -> dict[str, Any]:
    """A copy of the manifest whose every blob id ``b`` is ``new(b)`` (rekey's rewrite)."""
    body = dict(manifest)
    body["schema"] = {**body["schema"], "blobs": [new(b) for b in body["schema"]["blobs"]]}
    body["tables"] = [{**t, "blobs": [new(b) for b in t["blobs"]]} for t in body["tables"]]
    if isinstance(body.get("files"), dict):
        body["files"] = {
            **body["files"],
            "entries": [
                {**e, "blobs": [new(b) for b in e["blobs"]]} if "blobs" in e else e for e in file_entries(body)
            ],
        }
    return body
