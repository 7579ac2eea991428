"""REST handlers for users, projects, datasets and items (the dtlpy subset)."""

from __future__ import annotations

import math
from typing import Any

from localsync.dql import parse_query, run_query
from localsync.errors import BadRequest, InvalidQuery, NotFound
from localsync.server.app import RequestContext
from localsync.server.entities import with_item_links
from localsync.server.storage import JSON, ItemPage


def paged_response(items: list[JSON], *, total: int, page: int, page_size: int) -> JSON:
    """Return the paged-list shape of the platform's query endpoints."""
    return {
        "totalItemsCount": total,
        "items": items,
        "totalPagesCount": math.ceil(total / page_size) if page_size else 0,
        "hasNextPage": (page + 1) * page_size < total,
    }


def query_documents(documents: list[JSON], body: JSON) -> JSON:
    """Filter, sort and page a small collection (datasets, tasks) in Python."""
    query = parse_query(body)
    window, total = run_query(body, documents, {})
    return paged_response(
        [dict(document) for document in window],
        total=total,
        page=query.page,
        page_size=query.page_size,
    )


def context_projects(context: RequestContext, key: str) -> set[str]:
    """Return the projects a query's ``context`` names, all of them in the token."""
    body = context.object_body()
    scope = body.get("context") or {}
    requested = scope.get(key) if isinstance(scope, dict) else None
    if not requested:
        return set(context.user.project_ids)
    if not isinstance(requested, list) or not all(
        isinstance(project_id, str) for project_id in requested
    ):
        raise BadRequest("400", f"context.{key} must be a list of project ids")
    for project_id in requested:
        context.user.require_project(project_id)
    return set(requested)


def user_me(context: RequestContext) -> JSON:
    email = context.user.email
    return {
        "id": email,
        "email": email,
        "username": email,
        "projects": sorted(context.user.project_ids),
    }


def project_by_name(context: RequestContext) -> list[JSON]:
    name = context.path["name"]
    project = context.storage.project_named(name)
    if project is None:
        raise NotFound("404", f"Project {name!r} not found")
    context.user.require_project(project["id"])
    return [project]


def project_by_id(context: RequestContext) -> JSON:
    project_id = context.path["project_id"]
    project = context.storage.project(project_id)
    if project is None:
        raise NotFound("404", f"Project {project_id!r} not found")
    context.user.require_project(project_id)
    return project


def datasets_query(context: RequestContext) -> JSON:
    projects = context_projects(context, "projects")
    return query_documents(context.storage.datasets(projects), context.object_body())


def dataset_by_id(context: RequestContext) -> JSON:
    return context.require_dataset(context.path["dataset_id"])


def items_query(context: RequestContext) -> JSON:
    dataset_id = context.path["dataset_id"]
    body = context.object_body()
    context.require_dataset_access(dataset_id)
    resource = body.get("resource", "items")
    if resource != "items":
        raise InvalidQuery(
            f"resource {resource!r} is not supported here; query items with "
            "resource 'items'"
        )
    for key in ("update", "delete"):
        # NOTE: bulk updates and deletes through a query are not implemented.
        if key in body:
            raise BadRequest(
                "400", f"Query bodies with {key!r} are not supported by this server"
            )
    page: ItemPage = context.storage.query_items(dataset_id, body)
    items = [with_item_links(item, context.base_url) for item in page.items]
    return paged_response(
        items, total=page.total, page=page.page, page_size=page.page_size
    )


def item_by_id(context: RequestContext) -> JSON:
    item_id = context.path["item_id"]
    item = context.storage.item(item_id)
    if item is None:
        raise NotFound("404", f"Item {item_id!r} not found")
    context.require_dataset_access(item["datasetId"])
    return with_item_links(item, context.base_url)


def item_patch(context: RequestContext) -> JSON:
    item_id = context.path["item_id"]
    changes = context.object_body()
    item = context.storage.item(item_id)
    if item is None:
        raise NotFound("404", f"Item {item_id!r} not found")
    context.require_dataset_access(item["datasetId"])
    system = context.query.get("system", "false").lower() == "true"
    updated = context.storage.patch_item(
        item_id, changes, system=system, user_email=context.user.email
    )
    return with_item_links(updated, context.base_url)


ROUTES: list[tuple[str, str, Any]] = [
    ("/users/me", "GET", user_me),
    ("/projects/{name}/name", "GET", project_by_name),
    ("/projects/{project_id}", "GET", project_by_id),
    ("/datasets/query", "POST", datasets_query),
    ("/datasets/{dataset_id}", "GET", dataset_by_id),
    ("/datasets/{dataset_id}/query", "POST", items_query),
    ("/items/{item_id}", "GET", item_by_id),
    ("/items/{item_id}", "PATCH", item_patch),
]
