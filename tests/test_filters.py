"""Tests for localsync.filters, each checked against the real dtlpy 1.126.5 Filters.

Bodies are compared as ``json.dumps`` strings without sorting keys, so key order
counts. dtlpy makes no network call for Filters, and its files go to a temporary
``DATALOOP_PATH``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localsync import filters as lf
from localsync.errors import BadRequest, InvalidQuery

DEFAULTS = [{"hidden": False}, {"type": "file"}]
PAGING = {"page": 0, "pageSize": 1000, "resource": "items"}
JOIN_ON_ANNOTATIONS = {"resource": "annotations", "local": "itemId", "forigen": "id"}
ANNOTATION_DEFAULT_TYPES = [
    "box", "cube", "cube_3d", "class", "comparison", "ellipse", "point", "segment",
    "polyline", "pose", "binary", "subtitle", "text_mark", "gis", "ref_semantic_3d",
    "polyline_3d", "text", "ref_image",
]  # fmt: skip


@pytest.fixture(scope="module")
def dl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The real dtlpy package, imported with its files in a temporary folder."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATALOOP_PATH", str(tmp_path_factory.mktemp("dataloop")))
        with pytest.MonkeyPatch.context() as cwd:
            # dtlpy also reads ./.dataloop/state.json, so import it from an empty
            # folder.
            cwd.chdir(tmp_path_factory.mktemp("cwd"))
            import dtlpy
        yield dtlpy


def dumps(body: Any) -> str:
    return json.dumps(body, sort_keys=False)


def set_task_refs(f: Any, operation: str, task_ids: Any) -> None:
    """Add task references the way each library's task repository does."""
    if isinstance(f, lf.Filters):
        f.set_references(operation, task_ids=task_ids)
    else:
        f._ref_task = True
        f._ref_task_id = task_ids
        f._ref_op = operation


def built(m: ModuleType, *steps: Callable[[Any], Any], **kwargs: Any) -> Any:
    """Return ``m.Filters(**kwargs)`` after calling each step on it."""
    f = m.Filters(**kwargs)
    for step in steps:
        step(f)
    return f


def no_defaults_filter(m: ModuleType, *steps: Callable[[Any], Any]) -> Any:
    return built(m, *steps, use_defaults=False).prepare()["filter"]


def defaults_filter(m: ModuleType, *steps: Callable[[Any], Any]) -> Any:
    return built(m, *steps).prepare()["filter"]


def score_case(op_name: str, values: Any, key: str) -> Any:
    def build(m: ModuleType) -> Any:
        op = getattr(m.FiltersOperations, op_name)
        return no_defaults_filter(m, lambda f: f.add("metadata.user.score", values, op))

    expected = {"$and": [{"metadata.user.score": {key: values}}]}
    return pytest.param(build, expected, id=f"F-{key}-{values}")


def keyset_follow_up(m: ModuleType) -> Any:
    f = m.Filters(field="annotated", values=True)
    f.sort_by(field="id", value=m.FiltersOrderByDirection.ASCENDING)
    f.page = 0
    f.add("id", "LAST_ID", m.FiltersOperations.GREATER_THAN, m.FiltersOperations.AND)
    return f.prepare()


def tasks_list_body(m: ModuleType) -> Any:
    f = m.Filters(use_defaults=False, resource=m.FiltersResource.TASK)
    f.add(field="datasetId", values="D1")
    f.context = {"projectIds": ["P1"]}
    f.page_size = 500
    return f.prepare()


def task_items_body(m: ModuleType) -> Any:
    op = m.FiltersOperations.IN
    f = m.Filters(field="id", values=["I1", "I2"], operator=op, use_defaults=False)
    set_task_refs(f, "create", "T1")
    return f.prepare()


REFS_MATCH_STATUS = {
    "id": "TASK_ID",
    "type": "task",
    "metadata": {"status": {"$in": ["completed"]}},
}
REFS_NO_STATUS = {"type": "task", "metadata": {"status": {"$exists": False}}}

F_CASES = [
    pytest.param(
        lambda m: m.Filters().prepare(),
        {"filter": {"$and": DEFAULTS}, **PAGING},
        id="F1",
    ),
    pytest.param(
        lambda m: m.Filters(use_defaults=False).prepare(),
        {"filter": {}, **PAGING},
        id="F2",
    ),
    pytest.param(
        lambda m: m.Filters(field="annotated", values=True).prepare(),
        {"filter": {"$and": [*DEFAULTS, {"annotated": True}]}, **PAGING},
        id="F3",
    ),
    score_case("EQUAL", 5, "$eq"),
    score_case("NOT_EQUAL", 5, "$ne"),
    score_case("GREATER_THAN", 5, "$gt"),
    score_case("LESS_THAN", 5, "$lt"),
    score_case("GREATER_THAN_OR_EQUAL", 5, "$gte"),
    score_case("LESS_THAN_OR_EQUAL", 5, "$lte"),
    score_case("IN", [1, 2], "$in"),
    score_case("NIN", [1, 2], "$nin"),
    score_case("EXISTS", True, "$exists"),
    score_case("EXISTS", False, "$exists"),
    pytest.param(
        lambda m: no_defaults_filter(
            m, lambda f: f.add("metadata.user.tags", ["a", "b"])
        ),
        {"$and": [{"metadata.user.tags": ["a", "b"]}]},
        id="F8",
    ),
    pytest.param(
        lambda m: no_defaults_filter(m, lambda f: f.add("metadata.user.x", None)),
        {"$and": [{"metadata.user.x": None}]},
        id="F9",
    ),
    pytest.param(
        lambda m: defaults_filter(m, lambda f: f.add("filename", "/folder")),
        {"$and": [*DEFAULTS, {"filename": "/folder/**"}]},
        id="F10",
    ),
    pytest.param(
        lambda m: defaults_filter(m, lambda f: f.add("filename", ["/x", "/y/z.png"])),
        {"$and": [*DEFAULTS, {"filename": ["/x/**", "/y/z.png"]}]},
        id="F11",
    ),
    pytest.param(
        lambda m: defaults_filter(
            m,
            lambda f: setattr(f, "recursive", False),
            lambda f: f.add("filename", "/folder"),
        ),
        {"$and": [*DEFAULTS, {"filename": "/folder"}]},
        id="F12",
    ),
    pytest.param(
        lambda m: defaults_filter(m, lambda f: f.add("dir", "/folder")),
        {"$and": [*DEFAULTS, {"dir": "/folder"}]},
        id="F13",
    ),
    pytest.param(
        lambda m: defaults_filter(
            m,
            lambda f: f.add("dir", "/a", method=m.FiltersMethod.OR),
            lambda f: f.add("dir", "/b", method=m.FiltersMethod.OR),
        ),
        {"$or": [{"dir": "/a"}, {"dir": "/b"}], "$and": DEFAULTS},
        id="F14",
    ),
    pytest.param(
        lambda m: defaults_filter(
            m,
            lambda f: setattr(f, "method", m.FiltersMethod.OR),
            lambda f: f.add("name", "a.jpg"),
            lambda f: f.add("name", "b.jpg"),
        ),
        {"$or": [{"name": "a.jpg"}, {"name": "b.jpg"}], "$and": DEFAULTS},
        id="F15",
    ),
    pytest.param(
        lambda m: defaults_filter(
            m, lambda f: f.add("hidden", True), lambda f: f.add("type", "dir")
        ),
        {"$and": [{"hidden": True}, {"type": "dir"}]},
        id="F16",
    ),
    pytest.param(
        lambda m: no_defaults_filter(
            m,
            lambda f: f.add("metadata.user.a", 1),
            lambda f: f.add("metadata.user.a", 2),
        ),
        {"$and": [{"metadata.user.a": 1}, {"metadata.user.a": 2}]},
        id="F17",
    ),
    pytest.param(
        lambda m: defaults_filter(m, lambda f: f.pop("hidden")),
        {"$and": [{"type": "file"}]},
        id="F18",
    ),
    pytest.param(
        lambda m: built(
            m,
            lambda f: f.add(
                "metadata.system.refs.id", ["TASK_ID"], operator=m.FiltersOperations.IN
            ),
            use_defaults=False,
        ).prepare(),
        {
            "filter": {"$and": [{"metadata.system.refs.id": {"$in": ["TASK_ID"]}}]},
            **PAGING,
        },
        id="F19",
    ),
    pytest.param(
        lambda m: defaults_filter(
            m,
            lambda f: f.add(
                "metadata.system.refs",
                copy.deepcopy(REFS_MATCH_STATUS),
                operator=m.FiltersOperations.MATCH,
            ),
        ),
        {"$and": [*DEFAULTS, {"metadata.system.refs": {"$match": REFS_MATCH_STATUS}}]},
        id="F20",
    ),
    pytest.param(
        lambda m: no_defaults_filter(
            m,
            lambda f: f.add(
                "metadata.system.refs",
                copy.deepcopy(REFS_NO_STATUS),
                operator=m.FiltersOperations.MATCH,
            ),
        ),
        {"$and": [{"metadata.system.refs": {"$match": REFS_NO_STATUS}}]},
        id="F21",
    ),
    pytest.param(
        lambda m: defaults_filter(
            m, lambda f: f.add("metadata.system.refs.metadata.status", "completed")
        ),
        {"$and": [*DEFAULTS, {"metadata.system.refs.metadata.status": "completed"}]},
        id="F22",
    ),
    pytest.param(
        lambda m: m.Filters(field="metadata.system.refs", values=[]).prepare(),
        {"filter": {"$and": [*DEFAULTS, {"metadata.system.refs": []}]}, **PAGING},
        id="F23",
    ),
    pytest.param(
        lambda m: built(
            m,
            lambda f: f.add_join("label", "cat"),
            lambda f: f.add_join(
                "type", ["box", "polygon"], operator=m.FiltersOperations.IN
            ),
        ).prepare(),
        {
            "filter": {"$and": DEFAULTS},
            **PAGING,
            "join": {
                "on": JOIN_ON_ANNOTATIONS,
                "filter": {
                    "$and": [{"label": "cat"}, {"type": {"$in": ["box", "polygon"]}}]
                },
            },
        },
        id="F24",
    ),
    pytest.param(
        lambda m: built(
            m, lambda f: f.add_join("label", "cat", method=m.FiltersMethod.OR)
        ).prepare()["join"],
        {"on": JOIN_ON_ANNOTATIONS, "filter": {"$or": [{"label": "cat"}]}},
        id="F25",
    ),
    pytest.param(
        lambda m: built(
            m,
            lambda f: f.sort_by("filename"),
            lambda f: f.sort_by("createdAt", m.FiltersOrderByDirection.DESCENDING),
        ).prepare(),
        {
            "filter": {"$and": DEFAULTS},
            "sort": {"filename": "ascending", "createdAt": "descending"},
            **PAGING,
        },
        id="F26",
    ),
    pytest.param(
        lambda m: built(
            m, lambda f: setattr(f, "page", 3), lambda f: setattr(f, "page_size", 50)
        ).prepare(),
        {"filter": {"$and": DEFAULTS}, "page": 3, "pageSize": 50, "resource": "items"},
        id="F27-page",
    ),
    pytest.param(
        lambda m: m.Filters(page_size=5000).prepare(),
        {"filter": {"$and": DEFAULTS}, **PAGING},
        id="F27-clipped",
    ),
    pytest.param(
        lambda m: m.Filters(custom_filter={"$and": [{"dir": "/a"}]}).prepare(),
        {
            "filter": {"$and": [{"dir": "/a"}]},
            "resource": "items",
            "page": 0,
            "pageSize": 1000,
        },
        id="F28",
    ),
    pytest.param(
        lambda m: m.Filters(
            custom_filter={"filter": {"$and": [{"dir": "/a"}]}, "page": 2}
        ).prepare(),
        {
            "filter": {"$and": [{"dir": "/a"}]},
            "page": 2,
            "resource": "items",
            "pageSize": 1000,
        },
        id="F29",
    ),
    pytest.param(
        lambda m: m.Filters(resource=m.FiltersResource.ANNOTATION).prepare(),
        {
            "filter": {"$and": [{"type": {"$in": ANNOTATION_DEFAULT_TYPES}}]},
            "page": 0,
            "pageSize": 1000,
            "resource": "annotations",
        },
        id="F30",
    ),
    pytest.param(
        lambda m: m.Filters(
            field="name", values="t", resource=m.FiltersResource.TASK
        ).prepare(),
        {
            "filter": {"$and": [{"name": "t"}]},
            "page": 0,
            "pageSize": 1000,
            "resource": "tasks",
        },
        id="F31",
    ),
    pytest.param(
        lambda m: m.Filters(resource=m.FiltersResource.DATASET).prepare(),
        {"filter": {}, "page": 0, "pageSize": 1000, "resource": "datasets"},
        id="F32",
    ),
    pytest.param(
        lambda m: m.Filters(field="dir", values="/batch1").prepare(
            operation="update", update={"status": "processed"}
        ),
        {
            "filter": {"$and": [*DEFAULTS, {"dir": "/batch1"}]},
            **PAGING,
            "update": {"metadata": {"user": {"status": "processed"}}},
        },
        id="F33",
    ),
    pytest.param(
        lambda m: m.Filters(field="dir", values="/batch1").prepare(operation="delete"),
        {
            "filter": {"$and": [*DEFAULTS, {"dir": "/batch1"}]},
            "resource": "items",
            "delete": True,
        },
        id="F34",
    ),
    pytest.param(
        lambda m: m.Filters(field="annotated", values=True).prepare(query_only=True),
        {"filter": {"$and": [*DEFAULTS, {"annotated": True}]}},
        id="F35",
    ),
    pytest.param(
        lambda m: defaults_filter(
            m,
            lambda f: f.add("createdAt", "2024-03-*"),
            lambda f: f.add("filename", "*.jpg"),
        ),
        {"$and": [*DEFAULTS, {"createdAt": "2024-03-*"}, {"filename": "*.jpg"}]},
        id="F36",
    ),
    pytest.param(
        keyset_follow_up,
        {
            "filter": {
                "$and": [
                    *DEFAULTS,
                    {"annotated": True},
                    {"id": {"$gt": "LAST_ID"}},
                ]
            },
            "sort": {"id": "ascending"},
            **PAGING,
        },
        id="F37",
    ),
    pytest.param(
        tasks_list_body,
        {
            "filter": {"$and": [{"datasetId": "D1"}]},
            "page": 0,
            "pageSize": 500,
            "resource": "tasks",
            "context": {"projectIds": ["P1"]},
        },
        id="F38",
    ),
    pytest.param(
        task_items_body,
        {
            "filter": {"$and": [{"id": {"$in": ["I1", "I2"]}}]},
            **PAGING,
            "references": {
                "operation": "create",
                "refs": [{"type": "task", "id": "T1"}],
            },
        },
        id="F39",
    ),
]


@pytest.mark.parametrize(("build", "expected"), F_CASES)
def test_prepare_matches_reference(build: Any, expected: Any) -> None:
    assert dumps(build(lf)) == dumps(expected)


@pytest.mark.parametrize(("build", "expected"), F_CASES)
def test_prepare_matches_dtlpy(dl: ModuleType, build: Any, expected: Any) -> None:
    assert dumps(build(lf)) == dumps(build(dl))


def filter_with_everything(m: ModuleType) -> Any:
    f = m.Filters(field="dir", values="/a")
    f.add("name", "b.jpg", method=m.FiltersMethod.OR)
    f.sort_by("filename")
    f.add_join("label", "cat")
    return f


def task_filter(m: ModuleType) -> Any:
    return m.Filters(field="name", values="t", resource=m.FiltersResource.TASK)


ERROR_CASES = [
    pytest.param(
        filter_with_everything,
        lambda m, f: f.sort_by("x", "up"),
        BadRequest,
        ("400", "Sort can be by ascending or descending order only"),
        id="F40",
    ),
    pytest.param(
        filter_with_everything,
        lambda m, f: f.add("x", 1, method="xor"),
        BadRequest,
        ("400", "Unknown method xor, please select from: or/and"),
        id="F41",
    ),
    pytest.param(
        task_filter,
        lambda m, f: f.add_join("label", "cat"),
        BadRequest,
        ("400", "Cannot join to tasks filters"),
        id="F42",
    ),
    pytest.param(
        filter_with_everything,
        lambda m, f: f.add(
            field="metadata.user.x", operator=m.FiltersOperations.EXISTS
        ),
        TypeError,
        ("Filters.add() missing 1 required positional argument: 'values'",),
        id="F43",
    ),
    pytest.param(
        filter_with_everything,
        lambda m, f: f.prepare(operation="merge"),
        BadRequest,
        ("400", "Unknown operation: merge"),
        id="unknown-operation",
    ),
]


@pytest.mark.parametrize(("setup", "call", "error", "args"), ERROR_CASES)
def test_bad_call_raises_sdk_error(
    dl: ModuleType,
    setup: Callable[[ModuleType], Any],
    call: Callable[[ModuleType, Any], Any],
    error: type[Exception],
    args: tuple[str, ...],
) -> None:
    ours = setup(lf)
    before = attributes(ours), dumps(ours.prepare())

    with pytest.raises(error) as raised:
        call(lf, ours)

    assert raised.value.args == args
    assert (attributes(ours), dumps(ours.prepare())) == before

    with pytest.raises(Exception) as sdk_raised:
        call(dl, setup(dl))
    assert type(sdk_raised.value).__name__ == error.__name__
    assert sdk_raised.value.args == args


def test_bad_request_is_localsync_error() -> None:
    with pytest.raises(BadRequest) as raised:
        lf.Filters().add("x", 1, method="xor")

    assert raised.value.status_code == "400"
    assert raised.value.message == "Unknown method xor, please select from: or/and"


ENUM_NAMES = [
    "FiltersKnownFields",
    "FiltersResource",
    "FiltersOperations",
    "FiltersMethod",
    "FiltersOrderByDirection",
]


@pytest.mark.parametrize("name", ENUM_NAMES)
def test_enum_members_match_dtlpy(dl: ModuleType, name: str) -> None:
    ours = getattr(lf, name)
    sdk = getattr(dl, name)

    assert issubclass(ours, str)
    assert [(m.name, m.value) for m in ours] == [(m.name, m.value) for m in sdk]
    assert all(member == member.value for member in ours)
    assert [str(m) for m in ours] == [str(m) for m in sdk]


def test_enum_values_compare_as_strings() -> None:
    assert lf.FiltersOperations.EQUAL == "eq"
    assert lf.FiltersMethod.OR == "or"
    assert lf.FiltersOrderByDirection.DESCENDING == "descending"
    assert lf.FiltersResource.ITEM == "items"
    assert json.dumps(lf.FiltersOperations.IN) == '"in"'


def test_module_constants_match_dtlpy(dl: ModuleType) -> None:
    sdk_names = sorted(n for n in dir(dl) if n.startswith("FILTERS_"))
    our_names = sorted(n for n in dir(lf) if n.startswith("FILTERS_"))

    assert our_names == sdk_names
    for name in sdk_names:
        ours, sdk = getattr(lf, name), getattr(dl, name)
        assert type(ours).__name__ == type(sdk).__name__, name
        assert (ours.name, ours.value) == (sdk.name, sdk.value), name
    assert lf.KnownFields is lf.FiltersKnownFields


def test_annotation_types_match_dtlpy(dl: ModuleType) -> None:
    assert list(lf.ANNOTATION_TYPES) == [t.value for t in dl.AnnotationType]


def attributes(f: Any) -> str:
    return dumps(
        {
            "page": f.page,
            "page_size": f.page_size,
            "method": f.method,
            "sort": f.sort,
            "join": f.join,
            "recursive": f.recursive,
            "context": f.context,
            "custom_filter": f.custom_filter,
            "resource": f.resource,
            "known_operators": f.known_operators,
            "system_space": f.system_space,
            "or": [c.prepare() for c in f.or_filter_list],
            "and": [c.prepare() for c in f.and_filter_list],
        }
    )


RESOURCE_NAMES = [m.name for m in lf.FiltersResource]


@pytest.mark.parametrize("resource", RESOURCE_NAMES)
@pytest.mark.parametrize("use_defaults", [True, False])
def test_defaults_match_dtlpy(
    dl: ModuleType, resource: str, use_defaults: bool
) -> None:
    ours = lf.Filters(resource=lf.FiltersResource[resource], use_defaults=use_defaults)
    sdk = dl.Filters(resource=dl.FiltersResource[resource], use_defaults=use_defaults)

    assert attributes(ours) == attributes(sdk)
    assert dumps(ours.prepare()) == dumps(sdk.prepare())
    assert attributes(ours) == attributes(sdk)


def test_item_defaults() -> None:
    f = lf.Filters()

    assert f.page == 0
    assert f.page_size == 1000
    assert f.method == lf.FiltersMethod.AND
    assert f.sort == {}
    assert f.join is None
    assert f.recursive is True
    assert f.context is None
    assert f.custom_filter is None
    assert f.resource == "items"
    assert type(f.resource) is str
    assert f.has_field("hidden")
    assert f.has_field("type")
    assert not f.has_field("dir")


@pytest.mark.parametrize(
    ("resource", "page_size", "expected"),
    [("ITEM", 5000, 1000), ("EXECUTION", 150, 100), ("PIPELINE_EXECUTION", 101, 100)],
)
def test_page_size_clipped_with_warning(
    dl: ModuleType,
    caplog: pytest.LogCaptureFixture,
    resource: str,
    page_size: int,
    expected: int,
) -> None:
    ours = lf.Filters(resource=lf.FiltersResource[resource], page_size=page_size)
    sdk = dl.Filters(resource=dl.FiltersResource[resource], page_size=page_size)

    with caplog.at_level(logging.WARNING, logger="localsync.filters"):
        body = ours.prepare()

    assert body["pageSize"] == expected
    assert ours.page_size == expected
    assert dumps(body) == dumps(sdk.prepare())
    warnings = [r for r in caplog.records if r.name == "localsync.filters"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert str(page_size) in warnings[0].getMessage()


def test_small_page_resources_default_to_100(dl: ModuleType) -> None:
    for name in ("EXECUTION", "PIPELINE_EXECUTION", "DPK"):
        assert lf.Filters(resource=lf.FiltersResource[name]).page_size == 100
        assert dl.Filters(resource=dl.FiltersResource[name]).page_size == 100
    # An apps package filter starts at 100 but may go up to the general maximum.
    dpk = lf.Filters(resource=lf.FiltersResource.DPK, page_size=800)
    assert dpk.prepare()["pageSize"] == 800


def test_query_only_skips_page_size_clipping(caplog: pytest.LogCaptureFixture) -> None:
    f = lf.Filters(page_size=5000)

    with caplog.at_level(logging.WARNING, logger="localsync.filters"):
        body = f.prepare(query_only=True)

    assert list(body) == ["filter"]
    assert f.page_size == 5000
    assert not [r for r in caplog.records if r.name == "localsync.filters"]


def test_refs_metadata_field_logs_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="localsync.filters"):
        lf.Filters().add("metadata.system.refs.metadata.status", "completed")
        tasks = lf.Filters(resource=lf.FiltersResource.TASK)
        tasks.add("metadata.system.refs.metadata.status", "completed")

    warnings = [r for r in caplog.records if r.name == "localsync.filters"]
    assert len(warnings) == 1
    assert "MATCH" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param({}, [{"hidden": True}, {"type": "dir"}], id="items"),
        pytest.param(
            {"use_defaults": False},
            [{"hidden": False}, {"type": "file"}, {"hidden": True}, {"type": "dir"}],
            id="items-no-defaults",
        ),
        pytest.param(
            {"resource": "annotations"},
            [{"hidden": False}, {"hidden": True}, {"type": "dir"}],
            id="annotations",
        ),
        pytest.param(
            {"resource": "tasks"},
            [{"hidden": False}, {"type": "file"}, {"hidden": True}, {"type": "dir"}],
            id="tasks",
        ),
    ],
)
def test_unique_fields_come_from_defaults(
    dl: ModuleType, kwargs: dict[str, Any], expected: list[Any]
) -> None:
    bodies = []
    for m in (lf, dl):
        f = m.Filters(**kwargs)
        for field, value in (("hidden", False), ("type", "file")):
            f.add(field, value)
        for field, value in (("hidden", True), ("type", "dir")):
            f.add(field, value)
        bodies.append(dumps(f.prepare()["filter"]["$and"]))

    assert bodies[0] == dumps(expected)
    assert bodies[0] == bodies[1]


def test_pop_keeps_entry_after_removed_one(dl: ModuleType) -> None:
    bodies = []
    for m in (lf, dl):
        f = m.Filters(use_defaults=False)
        for value in (1, 2, 3):
            f.add("metadata.user.a", value)
        f.add("dir", "/a")
        f.add("metadata.user.a", 4)
        f.pop("metadata.user.a")
        bodies.append(dumps(f.prepare()["filter"]))

    assert bodies[0] == dumps({"$and": [{"metadata.user.a": 2}, {"dir": "/a"}]})
    assert bodies[0] == bodies[1]


def test_pop_join_removes_first_equal_entry(dl: ModuleType) -> None:
    bodies = []
    for m in (lf, dl):
        f = m.Filters()
        for field, value in (("label", "a"), ("label", "a"), ("type", "x")):
            f.add_join(field, value)
        f.add_join("label", "a")
        f.pop_join("label")
        bodies.append(dumps(f.prepare()["join"]))

    expected = {
        "on": JOIN_ON_ANNOTATIONS,
        "filter": {"$and": [{"type": "x"}, {"label": "a"}]},
    }
    assert bodies[0] == dumps(expected)
    assert bodies[0] == bodies[1]


def test_filename_list_rewritten_in_place(dl: ModuleType) -> None:
    paths = {}
    for m in (lf, dl):
        values = ["/x", "/y/z.png"]
        f = m.Filters(field="filename", values=values)
        f.prepare()
        f.recursive = False
        paths[m.__name__] = (values, f.prepare()["filter"]["$and"][-1])

    assert paths["localsync.filters"][0] == ["/x/**", "/y/z.png"]
    assert paths["localsync.filters"] == paths["dtlpy"]


def test_filename_list_with_number_fails(dl: ModuleType) -> None:
    errors = []
    for m in (lf, dl):
        f = m.Filters(field="filename", values=["/a", 5])
        with pytest.raises(AttributeError) as raised:
            f.prepare()
        errors.append((raised.value.args, f.and_filter_list[-1].values))

    assert errors[0] == (("'int' object has no attribute 'endswith'",), ["/a/**", 5])
    assert errors[0] == errors[1]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/folder", "/folder/**"),
        ("/folder/", "/folder/**"),
        ("/folder/*", "/folder/*"),
        ("*.jpg", "*.jpg"),
        ("/a/b.jpg", "/a/b.jpg"),
        ("/a.", "/a."),
        ("/.hidden", "/.hidden/**"),
        ("/", "/**"),
        ("", "/**"),
    ],
)
def test_folder_pattern(path: str, expected: str) -> None:
    assert lf.folder_pattern(path) == expected


def test_custom_filter_filled_in_place(dl: ModuleType) -> None:
    results = []
    for m in (lf, dl):
        custom = {"filter": {"$and": [{"dir": "/a"}]}, "join": {"filter": {}}}
        f = m.Filters(custom_filter=custom)
        first = dumps(f.prepare())
        f.page = 4
        results.append((first, dumps(f.prepare()), dumps(custom)))

    assert results[0] == results[1]
    assert '"page": 0' in results[0][1]
    assert '"forigen": "id"' in results[0][2]


def test_custom_filter_ignores_other_settings(dl: ModuleType) -> None:
    bodies = []
    for m in (lf, dl):
        f = m.Filters(custom_filter={"$and": [{"dir": "/a"}]}, context={"x": 1})
        f.sort_by("name")
        f.add("type", "dir")
        bodies.append(dumps(f.prepare(operation="delete")))

    expected = {
        "filter": {"$and": [{"dir": "/a"}]},
        "resource": "items",
        "page": 0,
        "pageSize": 1000,
    }
    assert bodies[0] == dumps(expected)
    assert bodies[0] == bodies[1]


def test_update_with_system_metadata(dl: ModuleType) -> None:
    bodies = []
    for m in (lf, dl):
        f = m.Filters(context={"projects": ["P"]})
        f.system_space = False
        body = f.prepare(
            operation="update",
            update={"a": 1},
            system_update={"b": 2},
            system_metadata=True,
        )
        bodies.append(dumps(body))

    assert list(json.loads(bodies[0])) == [
        "filter",
        "page",
        "pageSize",
        "resource",
        "update",
        "systemSpace",
        "context",
    ]
    assert '"update": {"metadata": {"user": {"a": 1}, "system": {"b": 2}}}' in bodies[0]
    assert bodies[0] == bodies[1]


@pytest.mark.parametrize("update", [None, {}])
def test_update_without_values_is_empty(dl: ModuleType, update: Any) -> None:
    ours = lf.Filters().prepare(operation="update", update=update)
    sdk = dl.Filters().prepare(operation="update", update=update)

    assert ours["update"] == {}
    assert dumps(ours) == dumps(sdk)


def test_references_for_tasks_and_assignments(dl: ModuleType) -> None:
    ours = lf.Filters(use_defaults=False)
    ours.set_references("delete", task_ids=["T1", "T2"], assignment_ids="A1")
    sdk = dl.Filters(use_defaults=False)
    sdk._ref_task, sdk._ref_task_id = True, ["T1", "T2"]
    sdk._ref_assignment, sdk._ref_assignment_id = True, "A1"
    sdk._ref_op = "delete"

    body = ours.prepare(operation="update", update={"ignored": True})

    assert body["references"] == {
        "operation": "delete",
        "refs": [
            {"type": "task", "id": "T1"},
            {"type": "task", "id": "T2"},
            {"type": "assignment", "id": "A1"},
        ],
    }
    assert "update" not in body
    assert dumps(body) == dumps(
        sdk.prepare(operation="update", update={"ignored": True})
    )


def test_resource_setter_resets_filter(dl: ModuleType) -> None:
    results = []
    for m in (lf, dl):
        f = m.Filters(field="dir", values="/a", context={"c": 1}, page_size=10)
        f.sort_by("name")
        f.resource = m.FiltersResource.ANNOTATION
        results.append((attributes(f), dumps(f.prepare())))

    assert results[0] == results[1]
    assert '"dir"' not in results[0][1]


def test_annotation_join_points_at_items(dl: ModuleType) -> None:
    bodies = []
    for m in (lf, dl):
        f = m.Filters(resource=m.FiltersResource.ANNOTATION)
        f.add_join("dir", "/a")
        bodies.append(dumps(f.prepare()["join"]))

    expected = {
        "on": {"resource": "items", "local": "id", "forigen": "itemId"},
        "filter": {"$and": [{"dir": "/a"}]},
    }
    assert bodies[0] == dumps(expected)
    assert bodies[0] == bodies[1]


def test_deepcopy_is_independent() -> None:
    f = lf.Filters(field="dir", values="/a")
    clone = copy.deepcopy(f)
    clone.add("id", "X", lf.FiltersOperations.GREATER_THAN)
    clone.sort_by("id")

    assert dumps(f.prepare()) == dumps(lf.Filters(field="dir", values="/a").prepare())
    assert clone.prepare()["sort"] == {"id": "ascending"}


CUSTOM_BODY_CASES = [
    pytest.param(
        {"$and": [{"dir": "/a"}]},
        {
            "filter": {"$and": [{"dir": "/a"}]},
            "resource": "items",
            "page": 0,
            "pageSize": 1000,
        },
        id="wrapped",
    ),
    pytest.param(
        {"filter": {"$or": [{"dir": "/a"}]}, "pageSize": 10, "resource": "tasks"},
        {
            "filter": {"$or": [{"dir": "/a"}]},
            "pageSize": 10,
            "resource": "tasks",
            "page": 0,
        },
        id="kept",
    ),
    pytest.param(
        {"filter": {}, "join": {"filter": {"$and": [{"label": "cat"}]}}},
        {
            "filter": {},
            "join": {"filter": {"$and": [{"label": "cat"}]}, "on": JOIN_ON_ANNOTATIONS},
            "resource": "items",
            "page": 0,
            "pageSize": 1000,
        },
        id="join-on-added",
    ),
    pytest.param(
        {}, {"filter": {}, "resource": "items", "page": 0, "pageSize": 1000}, id="empty"
    ),
]


@pytest.mark.parametrize(("filter_json", "expected"), CUSTOM_BODY_CASES)
def test_custom_body(dl: ModuleType, filter_json: Any, expected: Any) -> None:
    original = copy.deepcopy(filter_json)

    body = lf.custom_body(filter_json)

    assert dumps(body) == dumps(expected)
    assert filter_json == original
    sdk = dl.Filters(custom_filter=copy.deepcopy(filter_json))
    assert dumps(body) == dumps(sdk.prepare())


def test_custom_body_takes_resource_and_paging() -> None:
    body = lf.custom_body(
        {"$and": []}, resource=lf.FiltersResource.ANNOTATION, page=2, page_size=50
    )

    assert body == {
        "filter": {"$and": []},
        "resource": "annotations",
        "page": 2,
        "pageSize": 50,
    }


@pytest.mark.parametrize(
    ("filter_json", "fragment"),
    [
        pytest.param([{"dir": "/a"}], "expected a JSON object", id="list"),
        pytest.param("dir=/a", "expected a JSON object", id="string"),
        pytest.param(
            {"filter": [{"dir": "/a"}]}, "'filter' must be a JSON object", id="filter"
        ),
        pytest.param(
            {"filter": {}, "join": "x"}, "'join' must be a JSON object", id="join"
        ),
    ],
)
def test_custom_body_rejects_non_object(filter_json: Any, fragment: str) -> None:
    original = copy.deepcopy(filter_json)

    with pytest.raises(InvalidQuery) as raised:
        lf.custom_body(filter_json)

    assert fragment in raised.value.message
    assert raised.value.status_code == "400"
    assert filter_json == original


# Random call sequences, applied to both libraries.


class Member(NamedTuple):
    """An enum member named by class and member, resolved in each library."""

    enum: str
    name: str


class Omitted:
    """An argument left out of the call."""

    def __repr__(self) -> str:
        return "OMITTED"


OMITTED = Omitted()


def resolve(token: Any, m: ModuleType) -> Any:
    if isinstance(token, Member):
        return getattr(getattr(m, token.enum), token.name)
    return copy.deepcopy(token)


def members(enum: str, *names: str) -> st.SearchStrategy[Member]:
    names = names or tuple(getattr(lf, enum).__members__)
    return st.sampled_from([Member(enum, name) for name in names])


ALL_FIELDS = [
    "filename",
    "hidden",
    "type",
    "metadata.user.a",
    "dir",
    "name",
    "annotated",
    "id",
    "global",
    "label",
    "metadata.user.tags",
    "metadata.system.refs",
    "metadata.system.refs.id",
    "metadata.system.refs.metadata.status",
]
PATHS = st.sampled_from(
    ["/folder", "/folder/", "/a/b.jpg", "*.jpg", "/x/*", "/a.", "/.h", "", "/", "/a b"]
) | st.text(alphabet="/ab.*", max_size=6)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(alphabet="ab*/.$", max_size=5)
    | PATHS
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(alphabet="ab$.", max_size=3), inner, max_size=2)
    ),
    max_leaves=6,
)
VALUES = JSON_VALUES | st.lists(PATHS, max_size=3)
# Tokens are drawn from lists in which repeats weigh the common arguments up:
# most calls pass no operator and no method.
OPERATORS = st.sampled_from(
    [None, None, None, "eq", "regex", ""]
    + [Member("FiltersOperations", name) for name in lf.FiltersOperations.__members__]
    + [Member("FiltersMethod", "OR")]
)
METHODS = st.sampled_from(
    [OMITTED, OMITTED, OMITTED, "or", "and", "xor", "AND", None]
    + [Member("FiltersMethod", "AND"), Member("FiltersMethod", "OR")]
    + [Member("FiltersOperations", name) for name in ("OR", "AND", "IN")]
)
DIRECTIONS = members("FiltersOrderByDirection") | st.sampled_from(
    ["ascending", "descending", "up", None]
)
RESOURCES = members(
    "FiltersResource",
    "ITEM",
    "ANNOTATION",
    "TASK",
    "DATASET",
    "EXECUTION",
    "SERVICE",
    "PACKAGE",
    "DPK",
) | st.sampled_from(["items", "annotations", "tasks", "datasets"])
CONTEXTS = st.none() | st.fixed_dictionaries(
    {"projects": st.lists(st.text("P1", max_size=2), max_size=2)}
)
CUSTOM_FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "filter": st.just({"$and": [{"dir": "/a"}]}),
        "$and": st.just([{"dir": "/b"}]),
        "page": st.integers(0, 3),
        "pageSize": st.integers(1, 2000),
        "resource": st.sampled_from(["items", "tasks"]),
        "join": st.fixed_dictionaries(
            {}, optional={"on": st.just({"resource": "x"}), "filter": st.just({})}
        ),
    },
)
IDS = st.none() | st.sampled_from(["T1", ["T1", "T2"], []])


def constructor_kwargs(fields: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {},
        optional={
            "field": fields,
            "values": VALUES,
            "operator": OPERATORS,
            "method": METHODS.filter(lambda token: token is not OMITTED),
            "resource": RESOURCES,
            "use_defaults": st.booleans(),
            "context": CONTEXTS,
            "page_size": st.none() | st.integers(0, 3000),
            "custom_filter": st.none() | CUSTOM_FILTERS,
        },
    )


PREPARE_KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "operation": st.sampled_from(["delete", "update", None, "merge"]),
        "update": st.none()
        | st.dictionaries(st.sampled_from("ab"), SCALARS, max_size=2),
        "query_only": st.booleans(),
        "system_update": st.none() | st.just({"s": 1}),
        "system_metadata": st.booleans(),
    },
)


def operation_kinds(fields: st.SearchStrategy[str]) -> dict[str, Any]:
    return {
        "add": st.tuples(st.just("add"), fields, VALUES, OPERATORS, METHODS),
        "add_join": st.tuples(st.just("add_join"), fields, VALUES, OPERATORS, METHODS),
        "remove": st.tuples(st.sampled_from(["pop", "pop_join", "has_field"]), fields),
        "sort_by": st.tuples(st.just("sort_by"), fields, DIRECTIONS | st.just(OMITTED)),
        "set": st.one_of(
            st.tuples(st.just("set"), st.just("page"), st.integers(0, 5)),
            st.tuples(st.just("set"), st.just("page_size"), st.integers(0, 3000)),
            st.tuples(st.just("set"), st.just("recursive"), st.booleans()),
            st.tuples(
                st.just("set"),
                st.just("method"),
                METHODS.filter(lambda token: token is not OMITTED),
            ),
            st.tuples(st.just("set"), st.just("context"), CONTEXTS),
            st.tuples(st.just("set"), st.just("resource"), RESOURCES),
        ),
        "references": st.tuples(
            st.just("references"), st.sampled_from(["create", "delete"]), IDS, IDS
        ),
        "prepare": st.tuples(st.just("prepare"), PREPARE_KWARGS),
    }


# Kinds listed more than once are drawn more often: most calls add conditions.
KIND_WEIGHTS = ["add"] * 5 + ["remove"] * 2 + ["prepare"] * 2 + ["set"] * 2
KIND_WEIGHTS += ["add_join", "sort_by", "references"]


@st.composite
def call_sequences(draw: st.DrawFn) -> tuple[dict[str, Any], list[Any]]:
    """Draw constructor arguments and calls that share a pool of one to three fields.

    The small pool makes calls meet on one field (unique fields, pop, folder
    rewriting) in most sequences.
    """
    pool = draw(st.lists(st.sampled_from(ALL_FIELDS), min_size=1, max_size=3))
    fields = st.sampled_from(pool)
    kinds = operation_kinds(fields)
    operation = st.sampled_from(KIND_WEIGHTS).flatmap(kinds.__getitem__)
    init = draw(constructor_kwargs(fields))
    return init, draw(st.lists(operation, min_size=4, max_size=24))


class WarningCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def apply_operation(m: ModuleType, f: Any, operation: tuple[Any, ...]) -> Any:
    kind, *args = operation
    if kind in ("add", "add_join"):
        field, values, operator, method = (resolve(a, m) for a in args)
        kwargs = {} if isinstance(method, Omitted) else {"method": method}
        return getattr(f, kind)(field, values, operator, **kwargs)
    if kind in ("pop", "pop_join", "has_field"):
        return getattr(f, kind)(args[0])
    if kind == "sort_by":
        field, direction = (resolve(a, m) for a in args)
        return (
            f.sort_by(field)
            if isinstance(direction, Omitted)
            else f.sort_by(field, direction)
        )
    if kind == "set":
        return setattr(f, args[0], resolve(args[1], m))
    if kind == "references":
        operation_name, task_ids, assignment_ids = (resolve(a, m) for a in args)
        return add_references(f, operation_name, task_ids, assignment_ids)
    kwargs = {key: resolve(value, m) for key, value in args[0].items()}
    return f.prepare(**kwargs)


def add_references(f: Any, operation: str, task_ids: Any, assignment_ids: Any) -> None:
    if isinstance(f, lf.Filters):
        f.set_references(operation, task_ids=task_ids, assignment_ids=assignment_ids)
        return
    f._ref_op = operation
    if task_ids is not None:
        f._ref_task, f._ref_task_id = True, task_ids
    if assignment_ids is not None:
        f._ref_assignment, f._ref_assignment_id = True, assignment_ids


def outcome(call: Callable[[], Any], counter: WarningCounter) -> tuple[Any, ...]:
    """Return what a call gave: its JSON result or its error, and warnings logged."""
    counter.count = 0
    try:
        result = ("ok", dumps(call()))
    except Exception as error:  # every error must match, whatever its class
        result = ("error", type(error).__name__, repr(error.args))
    return (*result, counter.count)


def run_sequence(
    m: ModuleType, init: dict[str, Any], operations: list[Any], counter: WarningCounter
) -> list[tuple[Any, ...]]:
    filters: list[Any] = []
    kwargs = {key: resolve(value, m) for key, value in init.items()}
    results = [outcome(lambda: filters.append(m.Filters(**kwargs)), counter)]
    if not filters:
        return results

    f = filters[0]
    for operation in operations:
        results.append(outcome(lambda op=operation: apply_operation(m, f, op), counter))
    # Preparing rewrites stored filename lists, which the attributes then show.
    results.append(outcome(lambda: f.prepare(), counter))
    results.append(outcome(lambda: attributes(f), counter))
    results.append(outcome(lambda: f.prepare(), counter))
    return results


@pytest.fixture(scope="module")
def warning_counters(dl: ModuleType) -> Iterator[dict[str, WarningCounter]]:
    counters = {"dtlpy": WarningCounter(), "localsync.filters": WarningCounter()}
    loggers = {name: logging.getLogger(name) for name in counters}
    levels = {name: logger.level for name, logger in loggers.items()}
    for name, logger in loggers.items():
        logger.setLevel(logging.DEBUG)
        logger.addHandler(counters[name])
    # dtlpy also prints its warnings to stderr, and hundreds would bury the report.
    sdk_streams = [
        h for h in loggers["dtlpy"].handlers if type(h) is logging.StreamHandler
    ]
    for handler in sdk_streams:
        loggers["dtlpy"].removeHandler(handler)
    yield counters
    for name, logger in loggers.items():
        logger.removeHandler(counters[name])
        logger.setLevel(levels[name])
    for handler in sdk_streams:
        loggers["dtlpy"].addHandler(handler)


@settings(max_examples=200, deadline=None)
@given(sequence=call_sequences())
def test_random_sequences_match_dtlpy(
    dl: ModuleType,
    warning_counters: dict[str, WarningCounter],
    sequence: tuple[dict[str, Any], list[Any]],
) -> None:
    init, operations = sequence
    sdk = run_sequence(dl, init, operations, warning_counters["dtlpy"])
    ours = run_sequence(lf, init, operations, warning_counters["localsync.filters"])

    assert ours == sdk
