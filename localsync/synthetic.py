"""Synthetic Dataloop item exports for demos, tests and benchmarks.

:func:`generate_export_records` makes records from nothing, in the shape of the
real FruitImage and SheepFace exports, for machines without those files.
:func:`synthesize_records` streams any number of records made from real ones.
Both are deterministic for a given ``seed``.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from localsync.errors import BadRequest

API_URL = "https://gate.dataloop.ai/api/v1"
CREATOR = "or@dataloop.ai"

# Folders, labels and file name patterns of the two real sample datasets. FruitImage
# keeps the quirk of the real export: its validation items are filed under /test/.
_SHEEP_BREEDS = {
    "Merino": "M",
    "Poll Dorset": "P",
    "Suffolk": "S",
    "White Suffolk": "W",
}
_FRUITS = ("apple", "banana", "orange")
_FRUIT_FOLDERS = ("/train", "/test")
_BASE_TIME = datetime(2021, 8, 9, 6, 57, 45, tzinfo=UTC)


class ObjectIds:
    """A source of unique 24-hex ids shaped like MongoDB ObjectIds.

    An id is a 4-byte timestamp, a 5-byte value fixed by ``seed`` and ``kind``, and a
    3-byte counter, so ids of one source never repeat and sort in creation order.
    """

    def __init__(self, seed: int, kind: str, *, start: int = 0x61151CBF) -> None:
        digest = hashlib.sha1(f"{seed}:{kind}".encode()).hexdigest()
        self.middle = digest[:10]
        self.start = start
        self.count = 0

    def __next__(self) -> str:
        seconds, counter = divmod(self.count, 1 << 24)
        self.count += 1
        return f"{self.start + seconds:08x}{self.middle}{counter:06x}"

    def __iter__(self) -> Iterator[str]:
        return self


def generate_export_records(count: int, *, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Yield ``count`` export records (``_id``, ``filename``, ``annotations``,
    ``itemMetadata``) like the real sample exports, made without input files.

    About five in six are SheepFace items (one ``class`` annotation naming the breed,
    in folders such as ``/Poll Dorset``), the rest FruitImage items (one to three
    ``box`` annotations, in ``/train`` and ``/test``).
    """
    _check_count(count)
    rng = random.Random(seed)
    item_ids = ObjectIds(seed, "generated-item")
    other_ids = ObjectIds(seed, "generated-other")
    dataset_ids = {"sheep": next(other_ids), "fruit": next(other_ids)}
    for number in range(count):
        item_id = next(item_ids)
        if rng.random() < 5 / 6:
            filename, annotations = _sheep_item(rng, number, item_id, other_ids)
            dataset_id = dataset_ids["sheep"]
        else:
            filename, annotations = _fruit_item(rng, number, item_id, other_ids)
            dataset_id = dataset_ids["fruit"]
        for annotation in annotations:
            annotation["dataset"] = f"{API_URL}/datasets/{dataset_id}"
            annotation["datasetId"] = dataset_id
        yield {
            "_id": item_id,
            "filename": filename,
            "annotations": annotations,
            "itemMetadata": {"system": _system_metadata(rng, filename, other_ids)},
        }


def _sheep_item(
    rng: random.Random, number: int, item_id: str, ids: ObjectIds
) -> tuple[str, list[dict[str, Any]]]:
    breed = rng.choice(list(_SHEEP_BREEDS))
    filename = f"/{breed}/{number + 1:06d} {_SHEEP_BREEDS[breed]}.jpg"
    annotation = _annotation(rng, item_id, next(ids), label=breed, kind="class")
    return filename, [annotation]


def _fruit_item(
    rng: random.Random, number: int, item_id: str, ids: ObjectIds
) -> tuple[str, list[dict[str, Any]]]:
    fruit = rng.choice(_FRUITS)
    folder = rng.choice(_FRUIT_FOLDERS)
    filename = f"{folder}/{fruit}_{number + 1}.jpg"
    annotations = [
        _annotation(rng, item_id, next(ids), label=fruit, kind="box")
        for _ in range(rng.choice((1, 1, 1, 2, 3)))
    ]
    return filename, annotations


def _annotation(
    rng: random.Random, item_id: str, annotation_id: str, *, label: str, kind: str
) -> dict[str, Any]:
    created = _BASE_TIME + timedelta(milliseconds=rng.randrange(4 * 86_400_000))
    stamp = (
        created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z"
    )
    coordinates: list[dict[str, float]] = []
    if kind == "box":
        left, top = float(rng.randrange(0, 200)), float(rng.randrange(0, 200))
        right, bottom = left + rng.randrange(20, 200), top + rng.randrange(20, 200)
        coordinates = [{"x": left, "y": top, "z": 0}, {"x": right, "y": bottom, "z": 0}]
    return {
        "id": annotation_id,
        "url": f"{API_URL}/annotations/{annotation_id}",
        "creator": CREATOR,
        "createdAt": stamp,
        "updatedBy": CREATOR,
        "updatedAt": stamp,
        "metadata": {"system": {"automated": True}},
        "hash": f"{rng.getrandbits(160):040x}",
        "itemId": item_id,
        "item": f"{API_URL}/items/{item_id}",
        "label": label,
        "attributes": [],
        "type": kind,
        "coordinates": coordinates,
    }


def _system_metadata(
    rng: random.Random, filename: str, ids: ObjectIds
) -> dict[str, Any]:
    side = rng.randrange(120, 400)
    return {
        "originalname": posixpath.basename(filename),
        "size": rng.randrange(5_000, 200_000),
        "encoding": "7bit",
        "mimetype": rng.choice(("image/jpeg", "image/png")),
        "annotationStatus": [],
        "refs": [],
        "isBinary": True,
        "executionLogs": {
            "image-preprocess": {
                "default_module": {
                    "on_create": {next(ids): {"progress": 100, "status": "success"}}
                }
            }
        },
        "channels": rng.choice((3, 4)),
        "exif": {},
        "height": side,
        "thumbnailAnnotationsId": next(ids),
        "thumbnailId": next(ids),
        "width": side + rng.randrange(-40, 40),
    }


def synthesize_records(
    real_records: Iterable[dict[str, Any]],
    count: int,
    *,
    seed: int = 0,
    items_per_batch: int = 1000,
    unannotated_share: float = 0.0,
) -> Iterator[dict[str, Any]]:
    """Yield ``count`` export records made from ``real_records``, streaming.

    Each record copies a randomly chosen real one under a new unique ``_id`` and
    filename, in a folder ``<real folder>/batch NNNN``. Its annotations are copied
    with new ids. ``itemMetadata.user`` gains ``batch`` (int, one batch per about
    ``items_per_batch`` records, and the same number as the folder) and ``score``
    (int, 0 to 100). A share ``unannotated_share`` of the records gets no
    annotations, since every real record has some. Memory is bounded by the real
    records, which are read once, whatever ``count`` is.
    """
    _check_count(count)
    if items_per_batch < 1:
        raise BadRequest(
            "400", f"items_per_batch must be at least 1, not {items_per_batch!r}"
        )
    if not 0.0 <= unannotated_share <= 1.0:
        raise BadRequest(
            "400",
            f"unannotated_share must be between 0 and 1, not {unannotated_share!r}",
        )
    templates = [_template(record) for record in real_records]
    if not templates and count:
        raise BadRequest(
            "400", "synthesize_records needs at least one real record to copy; got none"
        )

    rng = random.Random(seed)
    item_ids = ObjectIds(seed, "synthesized-item")
    annotation_ids = ObjectIds(seed, "synthesized-annotation")
    batches = max(1, -(-count // items_per_batch))
    for number in range(count):
        folder, stem, extension, text = templates[rng.randrange(len(templates))]
        record = json.loads(text)
        batch = rng.randrange(batches)
        name = f"{stem} {number:07d}{extension}"
        record["_id"] = item_id = next(item_ids)
        record["filename"] = f"{folder}/batch {batch:04d}/{name}"
        if rng.random() < unannotated_share:
            record["annotations"] = []
        for annotation in record["annotations"]:
            annotation["id"] = annotation_id = next(annotation_ids)
            annotation["url"] = f"{API_URL}/annotations/{annotation_id}"
            annotation["itemId"] = item_id
            annotation["item"] = f"{API_URL}/items/{item_id}"
        metadata = record["itemMetadata"]
        metadata["system"]["originalname"] = name
        user = metadata.setdefault("user", {})
        user["batch"] = batch
        user["score"] = rng.randint(0, 100)
        yield record


def _template(record: dict[str, Any]) -> tuple[str, str, str, str]:
    """Return a real record's folder, name stem, extension and JSON text."""
    filename = record.get("filename")
    if not isinstance(filename, str) or not filename.startswith("/"):
        raise BadRequest(
            "400",
            f"Record {record.get('_id')!r} has no absolute 'filename' to copy; "
            "pass Dataloop item export records",
        )
    folder, name = posixpath.split(filename)
    stem, extension = posixpath.splitext(name)
    metadata = dict(record.get("itemMetadata") or {})
    metadata.setdefault("system", {})
    copied = {
        "_id": record.get("_id"),
        "filename": filename,
        "annotations": [
            annotation
            for annotation in record.get("annotations") or []
            if isinstance(annotation, dict)
        ],
        "itemMetadata": metadata,
    }
    return folder.rstrip("/"), stem, extension, json.dumps(copied)


def write_export_dir(records: Iterable[dict[str, Any]], directory: str | Path) -> int:
    """Write each record to ``<directory>/<filename>.json`` and return the count.

    The path repeats the record's folders (spaces included) and replaces the file
    extension with ``.json``, so ``read_export_records`` reads the folder back.
    """
    root = Path(directory)
    written = 0
    for record in records:
        filename = record.get("filename")
        if not isinstance(filename, str) or not filename.startswith("/"):
            raise BadRequest(
                "400",
                f"Record {record.get('_id')!r} has no absolute 'filename' "
                "such as '/a/b.jpg'",
            )
        relative = posixpath.splitext(filename.lstrip("/"))[0] + ".json"
        if ".." in relative.split("/"):
            raise BadRequest(
                "400",
                f"Record filename {filename!r} contains '..'; "
                "use a path inside the folder",
            )
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        written += 1
    return written


def _check_count(count: int) -> None:
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise BadRequest("400", f"count must be a non-negative integer, not {count!r}")
