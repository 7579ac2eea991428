"""Reading Dataloop JSON item exports into platform-shaped item and annotation JSON.

An export file holds one item: ``_id``, ``filename``, ``annotations`` and
``itemMetadata``. The platform derives the rest (``name``, ``dir``, ``annotated``,
``annotationsCount``) and keeps a ``type: dir`` item for every folder; this module
does the same, so the replica and the server build identical items from one export.
"""

from __future__ import annotations

import copy
import hashlib
import json
import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localsync.errors import BadRequest
from localsync.statuses import iso_timestamp


@dataclass
class ExportedItem:
    """One item and its annotations, ready to store."""

    item: dict[str, Any]
    annotations: list[dict[str, Any]] = field(default_factory=list)


def export_files(directory: str | Path) -> list[Path]:
    """Return the export files under ``directory`` in a stable order."""
    root = Path(directory)
    if not root.is_dir():
        raise BadRequest(
            "400",
            f"Export folder {str(root)!r} does not exist; pass a folder of "
            "Dataloop item JSON files",
        )
    files = sorted(path for path in root.rglob("*.json") if path.is_file())
    if not files:
        raise BadRequest("400", f"No .json files found under {str(root)!r}")
    return files


def read_export_records(directory: str | Path) -> Iterator[dict[str, Any]]:
    """Yield each export file's JSON object; raise ``BadRequest`` naming a bad file."""
    for path in export_files(directory):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest("400", f"Export file {str(path)!r} is not JSON: {exc}") from exc
        if not isinstance(record, dict) or not isinstance(record.get("_id"), str):
            raise BadRequest(
                "400", f"Export file {str(path)!r} has no string '_id'; is it an item export?"
            )
        if not isinstance(record.get("filename"), str) or not record["filename"].startswith("/"):
            raise BadRequest(
                "400",
                f"Export file {str(path)!r} has no absolute 'filename' such as '/a/b.jpg'",
            )
        yield record


def dir_item_id(dataset_id: str, path: str) -> str:
    """Return a stable 24-hex id for a folder item, so re-imports find the same one."""
    return hashlib.sha1(f"{dataset_id}:{path}".encode()).hexdigest()[:24]


def parent_folders(filename: str) -> list[str]:
    """Return every folder above ``filename``, outermost first, without ``/``."""
    folders = []
    folder = posixpath.dirname(filename)
    while folder not in ("", "/"):
        folders.append(folder)
        folder = posixpath.dirname(folder)
    return folders[::-1]


def item_from_record(
    record: dict[str, Any], *, dataset_id: str, creator: str, now: str
) -> ExportedItem:
    """Build the platform's item JSON (and its annotations) from one export record."""
    filename = record["filename"]
    annotations = [
        dict(copy.deepcopy(annotation), itemId=record["_id"], datasetId=dataset_id)
        for annotation in record.get("annotations") or []
        if isinstance(annotation, dict) and isinstance(annotation.get("id"), str)
    ]
    metadata = copy.deepcopy(record.get("itemMetadata") or {})
    system = metadata.setdefault("system", {})
    system.setdefault("refs", [])
    system.setdefault("annotationStatus", [])
    item = {
        "id": record["_id"],
        "datasetId": dataset_id,
        "type": "file",
        "hidden": bool(record.get("hidden", False)),
        "filename": filename,
        "name": posixpath.basename(filename),
        "dir": posixpath.dirname(filename) or "/",
        "annotated": bool(annotations),
        "annotationsCount": len(annotations),
        "createdAt": record.get("createdAt") or now,
        "updatedAt": record.get("updatedAt") or record.get("createdAt") or now,
        "creator": record.get("creator") or creator,
        "updatedBy": record.get("updatedBy") or creator,
        "metadata": metadata,
    }
    return ExportedItem(item, annotations)


def dir_item(path: str, *, dataset_id: str, creator: str, now: str) -> dict[str, Any]:
    return {
        "id": dir_item_id(dataset_id, path),
        "datasetId": dataset_id,
        "type": "dir",
        "hidden": False,
        "filename": path,
        "name": posixpath.basename(path),
        "dir": posixpath.dirname(path) or "/",
        "annotated": False,
        "annotationsCount": 0,
        "createdAt": now,
        "updatedAt": now,
        "creator": creator,
        "updatedBy": creator,
        "metadata": {"system": {"refs": [], "annotationStatus": []}},
    }


def exported_items(
    records: Iterable[dict[str, Any]],
    *,
    dataset_id: str,
    creator: str = "import@localsync",
    now: str | None = None,
) -> Iterator[ExportedItem]:
    """Yield every file item of ``records`` and then one dir item per folder.

    Memory grows with the number of folders, not of items, so this streams a
    synthesized million-item export as well as the real ones.
    """
    now = now or iso_timestamp()
    folders: set[str] = set()
    for record in records:
        exported = item_from_record(record, dataset_id=dataset_id, creator=creator, now=now)
        folders.update(parent_folders(exported.item["filename"]))
        yield exported
    for path in sorted(folders):
        yield ExportedItem(dir_item(path, dataset_id=dataset_id, creator=creator, now=now))
