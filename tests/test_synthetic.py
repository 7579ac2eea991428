"""Tests of the synthetic export records: their shape, uniqueness and streaming."""

from __future__ import annotations

import copy
import itertools
import json
import re
import tracemalloc
from pathlib import Path

import pytest

from localsync.errors import BadRequest
from localsync.exports import exported_items, read_export_records
from localsync.synthetic import (
    ObjectIds,
    generate_export_records,
    synthesize_records,
    write_export_dir,
)

HEX_ID = re.compile(r"^[0-9a-f]{24}$")
BATCH_FOLDER = re.compile(r"^(?P<folder>.*)/batch (?P<batch>\d{4})$")


@pytest.fixture(scope="module")
def real_records(exports_dir: Path) -> list[dict]:
    return list(read_export_records(exports_dir))


def folder_of(filename: str) -> str:
    return filename.rsplit("/", 1)[0]


# generate_export_records


def test_generated_record_keys_match_real(real_records: list[dict]) -> None:
    real_keys = {tuple(sorted(record)) for record in real_records}
    real_system_keys = {
        tuple(sorted(record["itemMetadata"]["system"])) for record in real_records
    }
    real_annotation_keys = {
        tuple(sorted(annotation))
        for record in real_records
        for annotation in record["annotations"]
    }

    generated = list(generate_export_records(300, seed=4))

    assert {tuple(sorted(record)) for record in generated} <= real_keys
    assert {
        tuple(sorted(record["itemMetadata"]["system"])) for record in generated
    } <= real_system_keys
    assert {
        tuple(sorted(annotation))
        for record in generated
        for annotation in record["annotations"]
    } <= real_annotation_keys


def test_generated_records_look_like_exports() -> None:
    records = list(generate_export_records(600, seed=1))

    assert len(records) == 600
    ids = [record["_id"] for record in records]
    assert all(HEX_ID.match(item_id) for item_id in ids)
    assert len(set(ids)) == len(ids)
    filenames = [record["filename"] for record in records]
    assert len(set(filenames)) == len(filenames)
    assert all(name.startswith("/") for name in filenames)
    folders = {folder_of(name) for name in filenames}
    assert "/Poll Dorset" in folders
    assert "/White Suffolk" in folders
    assert "/test" in folders
    for record in records:
        system = record["itemMetadata"]["system"]
        assert system["refs"] == []
        assert system["annotationStatus"] == []
        assert system["originalname"] == record["filename"].rsplit("/", 1)[1]
        assert isinstance(system["width"], int)
        assert isinstance(system["height"], int)
        assert system["mimetype"].startswith("image/")
        assert record["annotations"]
        for annotation in record["annotations"]:
            assert HEX_ID.match(annotation["id"])
            assert annotation["itemId"] == record["_id"]
            assert annotation["label"]


def test_generated_sheep_items_have_class_label() -> None:
    records = list(generate_export_records(200, seed=2))
    sheep = [r for r in records if not r["filename"].startswith(("/train", "/test"))]

    assert sheep
    for record in sheep:
        (annotation,) = record["annotations"]
        assert annotation["type"] == "class"
        assert annotation["coordinates"] == []
        assert annotation["label"] == folder_of(record["filename"]).lstrip("/")


def test_generated_fruit_items_have_boxes() -> None:
    records = list(generate_export_records(200, seed=2))
    fruit = [r for r in records if r["filename"].startswith(("/train", "/test"))]

    assert fruit
    for record in fruit:
        for annotation in record["annotations"]:
            assert annotation["type"] == "box"
            assert len(annotation["coordinates"]) == 2
            assert annotation["label"] in record["filename"]


def test_generated_ids_unique_across_annotations() -> None:
    records = list(generate_export_records(500, seed=0))
    ids = [record["_id"] for record in records]
    ids += [a["id"] for record in records for a in record["annotations"]]
    ids += [record["itemMetadata"]["system"]["thumbnailId"] for record in records]

    assert len(set(ids)) == len(ids)


def test_generated_records_depend_on_seed() -> None:
    first = list(generate_export_records(50, seed=7))

    assert first == list(generate_export_records(50, seed=7))
    assert first != list(generate_export_records(50, seed=8))


def test_generated_records_import_as_items() -> None:
    records = list(generate_export_records(100, seed=3))

    exported = list(exported_items(records, dataset_id="d" * 24))

    files = [e.item for e in exported if e.item["type"] == "file"]
    folders = {e.item["filename"] for e in exported if e.item["type"] == "dir"}
    assert len(files) == 100
    assert all(item["annotated"] for item in files)
    assert {item["dir"] for item in files} == folders


@pytest.mark.parametrize("count", [-1, 1.5, "3", True])
def test_generate_rejects_bad_count(count: object) -> None:
    with pytest.raises(BadRequest, match="count must be a non-negative integer"):
        list(generate_export_records(count))  # type: ignore[arg-type]


def test_generate_zero_records() -> None:
    assert list(generate_export_records(0)) == []


# synthesize_records


def test_synthesized_records_are_new_and_unique(real_records: list[dict]) -> None:
    records = list(synthesize_records(real_records, 5000, seed=1))

    assert len(records) == 5000
    ids = [record["_id"] for record in records]
    assert all(HEX_ID.match(item_id) for item_id in ids)
    assert len(set(ids)) == 5000
    assert not set(ids) & {record["_id"] for record in real_records}
    filenames = [record["filename"] for record in records]
    assert len(set(filenames)) == 5000
    annotation_ids = [a["id"] for record in records for a in record["annotations"]]
    real_annotation_ids = {a["id"] for r in real_records for a in r["annotations"]}
    assert len(set(annotation_ids)) == len(annotation_ids)
    assert not set(annotation_ids) & real_annotation_ids


def test_synthesized_annotations_point_to_item(real_records: list[dict]) -> None:
    for record in synthesize_records(real_records, 500, seed=2):
        assert record["annotations"]
        for annotation in record["annotations"]:
            assert annotation["itemId"] == record["_id"]
            assert annotation["item"].endswith(f"/items/{record['_id']}")
            assert annotation["url"].endswith(f"/annotations/{annotation['id']}")


def test_synthesized_folders_follow_real_ones(real_records: list[dict]) -> None:
    real_folders = {folder_of(record["filename"]) for record in real_records}
    records = list(synthesize_records(real_records, 4000, seed=3, items_per_batch=500))

    batches = set()
    for record in records:
        match = BATCH_FOLDER.match(folder_of(record["filename"]))
        assert match, record["filename"]
        assert match["folder"] in real_folders
        assert int(match["batch"]) == record["itemMetadata"]["user"]["batch"]
        batches.add(int(match["batch"]))
        name = record["filename"].rsplit("/", 1)[1]
        assert record["itemMetadata"]["system"]["originalname"] == name
    assert batches == set(range(8))
    assert {
        BATCH_FOLDER.match(folder_of(r["filename"]))["folder"] for r in records
    } == (real_folders)


def test_synthesized_user_metadata(real_records: list[dict]) -> None:
    scores = []
    for record in synthesize_records(real_records, 3000, seed=4):
        user = record["itemMetadata"]["user"]
        assert type(user["batch"]) is int
        assert type(user["score"]) is int
        assert 0 <= user["score"] <= 100
        scores.append(user["score"])
    assert min(scores) == 0
    assert max(scores) == 100


def test_synthesize_keeps_real_user_fields(real_records: list[dict]) -> None:
    with_user = [r for r in real_records if "user" in r["itemMetadata"]]
    assert with_user

    (record,) = synthesize_records(with_user[:1], 1)

    assert record["itemMetadata"]["user"]["location"] == {}
    assert "score" in record["itemMetadata"]["user"]


def test_synthesize_leaves_real_records_unchanged(real_records: list[dict]) -> None:
    sample = copy.deepcopy(real_records[:50])

    list(synthesize_records(sample, 200, seed=5))

    assert sample == real_records[:50]


def test_synthesize_unannotated_share(real_records: list[dict]) -> None:
    records = list(synthesize_records(real_records, 4000, unannotated_share=0.25))

    unannotated = sum(1 for record in records if not record["annotations"])
    assert 800 < unannotated < 1200


def test_synthesize_is_deterministic(real_records: list[dict]) -> None:
    first = list(synthesize_records(real_records, 100, seed=9))

    assert first == list(synthesize_records(real_records, 100, seed=9))
    assert first != list(synthesize_records(real_records, 100, seed=10))


def test_synthesize_accepts_generated_records() -> None:
    records = list(synthesize_records(generate_export_records(40), 300))

    assert len({record["_id"] for record in records}) == 300


def test_synthesize_streams_in_constant_memory(real_records: list[dict]) -> None:
    def peak_bytes(count: int) -> int:
        records = synthesize_records(real_records, count, seed=6)
        tracemalloc.start()
        for _ in records:
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    small, large = peak_bytes(2_000), peak_bytes(20_000)

    assert large < small + 256 * 1024


def test_synthesize_is_lazy() -> None:
    records = synthesize_records(generate_export_records(10), 10**12)

    assert len(list(itertools.islice(records, 3))) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"items_per_batch": 0}, "items_per_batch must be at least 1"),
        ({"unannotated_share": 1.5}, "unannotated_share must be between 0 and 1"),
        ({"unannotated_share": -0.1}, "unannotated_share must be between 0 and 1"),
    ],
)
def test_synthesize_rejects_bad_options(options: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        list(synthesize_records(generate_export_records(2), 5, **options))


def test_synthesize_needs_records() -> None:
    with pytest.raises(BadRequest, match="needs at least one real record"):
        list(synthesize_records([], 5))

    assert list(synthesize_records([], 0)) == []


def test_synthesize_rejects_relative_filename() -> None:
    record = next(generate_export_records(1))
    record["filename"] = "relative.jpg"

    with pytest.raises(BadRequest, match="no absolute 'filename'"):
        list(synthesize_records([record], 5))


# write_export_dir


def test_write_export_dir_round_trips(tmp_path: Path) -> None:
    records = list(synthesize_records(generate_export_records(20, seed=1), 60))

    written = write_export_dir(records, tmp_path / "export")

    assert written == 60
    read_back = sorted(read_export_records(tmp_path / "export"), key=lambda r: r["_id"])
    assert read_back == sorted(records, key=lambda r: r["_id"])
    sample = records[0]["filename"]
    path = tmp_path / "export" / (sample.lstrip("/").rsplit(".", 1)[0] + ".json")
    assert json.loads(path.read_text())["filename"] == sample


def test_write_export_dir_keeps_spaces(tmp_path: Path) -> None:
    record = next(generate_export_records(1))
    record["filename"] = "/Poll Dorset/batch 0001/000001 P.jpg"

    write_export_dir([record], tmp_path)

    assert (tmp_path / "Poll Dorset" / "batch 0001" / "000001 P.json").is_file()


@pytest.mark.parametrize("filename", ["relative.jpg", "/../outside.jpg", None])
def test_write_export_dir_rejects_bad_filename(
    tmp_path: Path, filename: object
) -> None:
    record = next(generate_export_records(1))
    record["filename"] = filename

    with pytest.raises(BadRequest, match="filename"):
        write_export_dir([record], tmp_path / "export")

    assert not (tmp_path / "export").exists()
    assert not (tmp_path / "outside.json").exists()


# ObjectIds


def test_object_ids_sort_in_creation_order() -> None:
    source = ObjectIds(0, "test")
    source.count = (1 << 24) - 2
    ids = [next(source) for _ in range(4)]

    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    assert all(HEX_ID.match(item_id) for item_id in ids)
