"""Entity objects of the dtlpy-shaped API: Project, Dataset, Item, Task, Assignment.

Each wraps the platform JSON stored in the replica and exposes the attribute names
of the dtlpy 1.126.5 entity of the same name. Status calls journal the change in the
replica and, unlike the SDK, refresh the item objects they were given.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from localsync.api import status_calls
from localsync.api.errors import unsupported
from localsync.statuses import allowed_statuses, task_type
from localsync.store import StatusResult

if TYPE_CHECKING:
    from localsync.api.client import ReplicaApi
    from localsync.api.paged import PagedEntities
    from localsync.api.repositories import Assignments, Datasets, Items, Tasks
    from localsync.filters import Filters

JSONDict = dict[str, Any]


class ItemAction:
    """A status a task offers, as ``dl.ItemAction``: its action and how it shows."""

    def __init__(
        self,
        action: str,
        display_name: str | None = None,
        color: str = "#FFFFFF",
        icon: str | None = None,
    ) -> None:
        if not action or not isinstance(action, str):
            raise ValueError("action should be a non-empty string")
        self.action = action
        self.display_name = display_name or action
        self.color = color
        self.icon = icon

    @classmethod
    def from_json(cls, _json: JSONDict) -> ItemAction:
        return cls(
            action=_json.get("action"),  # type: ignore[arg-type]
            display_name=_json.get("displayName") or None,
            color=_json.get("color") or "#FFFFFF",
            icon=_json.get("icon") or None,
        )

    def to_json(self) -> JSONDict:
        result: JSONDict = {
            "action": self.action,
            "color": self.color,
            "displayName": self.display_name,
        }
        if self.icon is not None:
            result["icon"] = self.icon
        return result

    def __repr__(self) -> str:
        return f"ItemAction(action={self.action!r}, display_name={self.display_name!r})"


class Entity:
    """Base of the entities: the stored JSON and the API handle it came from."""

    _kind = "entity"
    # Public attributes of the dtlpy 1.126.5 entity that localsync does not offer.
    _sdk_only: frozenset[str] = frozenset()

    def __init__(self, _json: JSONDict, api: ReplicaApi) -> None:
        self._json = _json
        self._api = api

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes that are not defined on the class.
        if name in type(self)._sdk_only:
            raise unsupported(f"{self._kind}.{name}")
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Entity)
            and type(other) is type(self)
            and other.id == self.id
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.id))

    @property
    def id(self) -> str:
        return str(self._json["id"])

    @property
    def name(self) -> str | None:
        return self._json.get("name")

    @property
    def metadata(self) -> JSONDict:
        metadata: JSONDict = self._json.setdefault("metadata", {})
        return metadata

    @property
    def created_at(self) -> str | None:
        return self._json.get("createdAt")

    @property
    def updated_at(self) -> str | None:
        return self._json.get("updatedAt")

    @property
    def creator(self) -> str | None:
        return self._json.get("creator")

    @property
    def platform_dict(self) -> JSONDict:
        return self._json

    def to_json(self) -> JSONDict:
        """Return a copy of the entity's platform JSON."""
        return copy.deepcopy(self._json)

    def _replace_json(self, _json: JSONDict) -> None:
        """Take the newer stored JSON, keeping the ``metadata`` dict object.

        A caller that kept a reference to ``item.metadata`` sees the new values too.
        """
        metadata = self._json.get("metadata")
        self._json = _json
        if isinstance(metadata, dict) and isinstance(_json.get("metadata"), dict):
            metadata.clear()
            metadata.update(_json["metadata"])
            _json["metadata"] = metadata


class Project(Entity):
    _kind = "project"
    _sdk_only = frozenset(
        "account add_member analytics apps archived artifacts bots checkout codebases "
        "compositions contributors delete dpks drivers executions feature_constraints "
        "feature_sets features from_json integrations isBlocked is_blocked is_fetched "
        "items list_members models ontologies open_in_web org packages pipelines "
        "platform_url print projects recipes remove_member role services settings "
        "system_project to_df triggers update updatedAt update_member url "
        "webhooks".split()
    )

    @property
    def createdAt(self) -> str | None:  # noqa: N802
        return self.created_at

    @property
    def datasets(self) -> Datasets:
        from localsync.api.repositories import Datasets

        return Datasets(self._api, project=self)

    @property
    def tasks(self) -> Tasks:
        return self._api.dataset_entity().tasks

    @property
    def assignments(self) -> Assignments:
        return self._api.dataset_entity().assignments


class Dataset(Entity):
    _kind = "dataset"
    _sdk_only = frozenset(
        "access_level add_label add_labels annotations annotations_count "
        "assign_subset_to_items checkout clone collections datasets delete "
        "delete_attributes delete_labels directoryTree directory_tree download "
        "download_annotations download_folder driver enable_sync_with_cloned "
        "expiration_options export feature_sets features from_json "
        "get_items_missing_ml_subset get_recipe_ids index_driver instance_map "
        "is_fetched is_syncing items_url labels labels_flat_dict ontologies "
        "ontology_ids open_in_web platform_url print readable_type recipes "
        "remove_subset_from_items schema serialize_labels set_readonly "
        "set_repositories settings split_ml_subsets src_dataset switch_recipe sync "
        "to_df unlock update update_attributes update_label update_labels "
        "updated_by upload_annotations url".split()
    )

    @property
    def projects(self) -> list[str]:
        return list(self._json.get("projects") or [])

    @property
    def project_id(self) -> str | None:
        projects = self.projects
        return projects[-1] if projects else self._api.store.setting("project_id")

    @property
    def project(self) -> Project:
        return self._api.project_entity()

    @property
    def items_count(self) -> int:
        """Number of items (files and folders) of the dataset in the replica."""
        row = self._api.store.conn.execute(
            "SELECT COUNT(*) FROM items WHERE dataset_id = ?", (self.id,)
        ).fetchone()
        return int(row[0])

    @property
    def itemsCount(self) -> int:  # noqa: N802
        return self.items_count

    @property
    def annotated(self) -> Any:
        return self._json.get("annotated")

    @property
    def readonly(self) -> bool:
        return bool(self._json.get("readonly", False))

    @property
    def items(self) -> Items:
        from localsync.api.repositories import Items

        return Items(self._api, dataset=self)

    @property
    def tasks(self) -> Tasks:
        from localsync.api.repositories import Tasks

        return Tasks(self._api, dataset=self)

    @property
    def assignments(self) -> Assignments:
        from localsync.api.repositories import Assignments

        return Assignments(self._api, dataset=self)


class Item(Entity):
    _kind = "item"
    _sdk_only = frozenset(
        "annotations annotations_link assign_collection assign_subset assignments "
        "clone collections dataset_url datasets delete download features from_json "
        "get_current_subset items list_collections model modalities move "
        "open_in_web platform_url print remove_subset resolved_stream "
        "resource_executions set_description set_repositories task_scores tasks "
        "to_df unassign_collection update".split()
    )

    def __init__(
        self, _json: JSONDict, api: ReplicaApi, dataset: Dataset | None = None
    ) -> None:
        super().__init__(_json, api)
        self._dataset = dataset

    def __repr__(self) -> str:
        return f"Item(id={self.id!r}, filename={self.filename!r})"

    @property
    def filename(self) -> str | None:
        return self._json.get("filename")

    @property
    def dir(self) -> str | None:
        return self._json.get("dir")

    @property
    def type(self) -> str | None:
        return self._json.get("type")

    @property
    def hidden(self) -> bool:
        return bool(self._json.get("hidden", False))

    @property
    def annotated(self) -> Any:
        return self._json.get("annotated")

    @property
    def annotations_count(self) -> int | None:
        return self._json.get("annotationsCount")

    @property
    def createdAt(self) -> str | None:  # noqa: N802
        return self.created_at

    @property
    def updated_by(self) -> str | None:
        return self._json.get("updatedBy")

    @property
    def dataset_id(self) -> str | None:
        return self._json.get("datasetId")

    @property
    def datasetId(self) -> str | None:  # noqa: N802
        return self.dataset_id

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = self._api.dataset_entity()
        return self._dataset

    @property
    def project_id(self) -> str | None:
        return self._json.get("projectId") or self.dataset.project_id

    @property
    def project(self) -> Project:
        return self._api.project_entity()

    @property
    def spec(self) -> Any:
        return self._json.get("spec")

    @property
    def url(self) -> str | None:
        return self._json.get("url")

    @property
    def stream(self) -> str | None:
        return self._json.get("stream")

    @property
    def thumbnail(self) -> str | None:
        return self._json.get("thumbnail")

    @property
    def system(self) -> JSONDict:
        system: JSONDict = self.metadata.get("system", {})
        return system

    @property
    def description(self) -> str | None:
        description = self._json.get("description")
        if description is None:
            description = (self.metadata.get("description") or {}).get("text")
        return None if description is None else str(description)

    @property
    def mimetype(self) -> str | None:
        return self.system.get("mimetype")

    @property
    def size(self) -> int | None:
        return self.system.get("size")

    @property
    def width(self) -> int | None:
        return self.system.get("width")

    @property
    def height(self) -> int | None:
        return self.system.get("height")

    @property
    def fps(self) -> Any:
        return self.metadata.get("fps")

    @property
    def is_fetched(self) -> bool:
        return True

    def update_status(
        self,
        status: str,
        clear: bool = False,
        assignment_id: str | None = None,
        task_id: str | None = None,
    ) -> StatusResult:
        """Set (or with ``clear``, remove) this item's status in one task.

        With no id given, the task is picked with the SDK's rule. If the item has at
        most two refs, the last assignment ref wins, else the last task ref. With
        more refs the call raises ``BadRequest('400', 'must provide assignment_id
        or task_id')``. An
        assignment stands for its task. Raises ``NotFound`` naming the task when
        the item is not in it, and ``BadRequest`` listing the allowed statuses for
        a status the task does not offer. The change is journaled, this object
        is refreshed, and the store's ``StatusResult`` is returned.
        """
        return status_calls.update_item_status(
            self._api,
            self,
            status,
            clear=clear,
            assignment_id=assignment_id,
            task_id=task_id,
        )

    def status(
        self, assignment_id: str | None = None, task_id: str | None = None
    ) -> str | None:
        """Return the item's status in a task or assignment, read from this object.

        An assignment ref shows the status of its task's register; ``None`` means
        no status, or an id the item has no ref of.
        """
        return status_calls.item_status(
            self._api, self, assignment_id=assignment_id, task_id=task_id
        )


class Task(Entity):
    _kind = "task"
    _sdk_only = frozenset(
        "add_items create_assignment create_qa_task current_assignments delete "
        "from_json open_in_web platform_url remove_items settings update "
        "url".split()
    )

    @property
    def status(self) -> str | None:
        return self._json.get("status")

    @property
    def project_id(self) -> str | None:
        return self._json.get("projectId")

    @property
    def dataset_id(self) -> str | None:
        return self._json.get("datasetId")

    @property
    def spec(self) -> JSONDict:
        return self._json.get("spec") or {}

    @property
    def task_type(self) -> str:
        """``"annotation"`` or ``"qa"``, from ``spec.type``."""
        return task_type(self._json)

    @property
    def query(self) -> str | None:
        return self._json.get("query")

    @property
    def assignmentIds(self) -> list[str]:  # noqa: N802
        return list(self._json.get("assignmentIds") or [])

    @property
    def available_actions(self) -> list[ItemAction]:
        return [
            ItemAction.from_json(action)
            for action in self._json.get("availableActions") or []
            if isinstance(action, dict)
        ]

    @property
    def allowed_statuses(self) -> list[str]:
        """Statuses the task accepts: its actions, else the defaults of its type."""
        return allowed_statuses(self._json)

    @property
    def item_status(self) -> Any:
        return self._json.get("itemStatus")

    @property
    def annotation_status(self) -> Any:
        return self._json.get("annotationStatus")

    @property
    def total_items(self) -> int | None:
        return self._json.get("totalItems")

    def status_counts(self) -> dict[str | None, int]:
        """Count the task's items per status in the replica; ``None`` is no status."""
        return status_calls.status_counts(self._api.store, self.id)

    @property
    def progress(self) -> Any:
        return self._json.get("progress")

    @property
    def priority(self) -> Any:
        return self._json.get("priority")

    @property
    def task_owner(self) -> str | None:
        return self._json.get("taskOwner")

    @property
    def due_date(self) -> Any:
        return self._json.get("dueDate")

    @property
    def recipe_id(self) -> str | None:
        return self._json.get("recipeId")

    @property
    def description(self) -> str | None:
        return self._json.get("description")

    @property
    def for_review(self) -> Any:
        return self._json.get("forReview")

    @property
    def issues(self) -> Any:
        return self._json.get("issues")

    @property
    def dataset(self) -> Dataset:
        return self._api.dataset_entity()

    def get_dataset(self) -> Dataset:
        return self.dataset

    def get_project(self) -> Project:
        return self._api.project_entity()

    @property
    def project(self) -> Project:
        return self._api.project_entity()

    @property
    def tasks(self) -> Tasks:
        return self.dataset.tasks

    @property
    def assignments(self) -> Assignments:
        from localsync.api.repositories import Assignments

        return Assignments(self._api, dataset=self.dataset, task=self)

    def get_items(
        self, filters: Filters | None = None, get_consensus_items: bool = False
    ) -> PagedEntities:
        """Return the task's items as pages, built as the SDK builds the query.

        Without ``filters`` the query is ``Filters(use_defaults=False)``, so hidden
        items and folders are included; a given filter keeps its own defaults. The
        pages remember this task, so ``items.update_status(items=pages)`` uses it.
        """
        return self.tasks.get_items(
            task=self, filters=filters, get_consensus_items=get_consensus_items
        )

    def set_status(
        self, status: str, operation: str, item_ids: list[str]
    ) -> StatusResult:
        """Set (``operation="create"``) or clear (``"delete"``) items' status here.

        Items that are missing or not in the task are skipped and counted.
        """
        return self.tasks.set_status(
            status=status, operation=operation, task_id=self.id, item_ids=item_ids
        )


class Assignment(Entity):
    _kind = "assignment"
    _sdk_only = frozenset(
        "datasets from_json is_fetched open_in_web platform_url print reassign "
        "redistribute to_df update".split()
    )

    @property
    def annotator(self) -> str | None:
        return self._json.get("annotator")

    @property
    def status(self) -> str | None:
        return self._json.get("status")

    @property
    def project_id(self) -> str | None:
        return self._json.get("projectId")

    def _system(self) -> JSONDict:
        metadata = self._json.get("metadata") or {}
        return metadata.get("system") or metadata

    @property
    def task_id(self) -> str | None:
        return self._system().get("taskId")

    @property
    def dataset_id(self) -> str | None:
        return self._system().get("datasetId")

    @property
    def total_items(self) -> int | None:
        return self._json.get("totalItems")

    @property
    def item_status(self) -> Any:
        return self._json.get("itemStatus")

    @property
    def annotation_status(self) -> Any:
        return self._json.get("annotationStatus")

    @property
    def for_review(self) -> Any:
        return self._json.get("forReview")

    @property
    def issues(self) -> Any:
        return self._json.get("issues")

    @property
    def updated_by(self) -> str | None:
        return self._json.get("updatedBy")

    @property
    def url(self) -> str | None:
        return self._json.get("url")

    @property
    def task(self) -> Task:
        return self.dataset.tasks.get(task_id=self.task_id)

    @property
    def project(self) -> Project:
        return self._api.project_entity()

    @property
    def dataset(self) -> Dataset:
        return self._api.dataset_entity()

    @property
    def assignments(self) -> Assignments:
        return self.dataset.assignments

    def get_items(
        self, dataset: Dataset | None = None, filters: Filters | None = None
    ) -> PagedEntities:
        """Return the assignment's items as pages (``refs.id`` is the assignment)."""
        return self.assignments.get_items(
            assignment=self, dataset=dataset, filters=filters
        )

    def set_status(self, status: str, operation: str, item_id: str) -> StatusResult:
        """Set or clear one item's status through this assignment, in its task."""
        return self.assignments.set_status(
            status=status, operation=operation, item_id=item_id, assignment_id=self.id
        )
