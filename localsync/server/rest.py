"""REST handlers for users, projects, datasets and items (the dtlpy subset)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from localsync.dql import matches
from localsync.errors import BadRequest, InvalidQuery, NotFound
from localsync.server.app import RequestContext
from localsync.server.entities import with_item_links
from localsync.server.storage import JSON, ItemPage

MAX_PAGE_SIZE = 1000


def paged_response(items: list[JSON], *, total: int, page: int, page_size: int) -> JSON:
    """Return the paged-list shape of the platform's query endpoints."""
    return {
        "totalItemsCount": total,
        "items": items,
        "totalPagesCount": math.ceil(total / page_size) if page_size else 0,
        "hasNextPage": (page + 1) * page_size < total,
    }


def paging_of(body: JSON) -> tuple[int, int]:
    """Return ``(page, pageSize)`` of a query body, or raise 400 naming the value."""
    page, page_size = body.get("page", 0), body.get("pageSize", MAX_PAGE_SIZE)
    if isinstance(page, bool) or not isinstance(page, int) or page < 0:
        raise InvalidQuery(f"page must be an integer from 0, got {page!r}")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise InvalidQuery(f"pageSize must be a positive integer, got {page_size!r}")
    return page, min(page_size, MAX_PAGE_SIZE)


def query_documents(documents: Iterable[JSON], body: JSON) -> JSON:
    """Filter and page a small collection (datasets, tasks) with the query language."""
    query = body.get("filter") or {}
    if not isinstance(query, dict):
        raise InvalidQuery(f"filter must be an object, got {query!r}")
    page, page_size = paging_of(body)
    found = [document for document in documents if matches(query, document)]
    window = found[page * page_size : (page + 1) * page_size]
    return paged_response(window, total=len(found), page=page, page_size=page_size)


def context_projects(context: RequestContext, key: str) -> set[str]:
    """Return the projects a query's ``context`` names, all of them in the token."""
    body = context.object_body()
    scope = body.get("context") or {}
    requested = scope.get(key) if isinstance(scope, dict) else None
    if not requested:
        return set(context.user.project_ids)
    if not isinstance(requested, list):
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
    paging_of(body)
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
