"""Kibana's own template filters: ``json_parse``, ``entries`` and ``pick``.

Kibana registers these three on its LiquidJS engine for workflows; each leaves a value
it cannot read unchanged rather than failing the render.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["entries", "json_parse", "pick"]


def json_parse(value: object) -> object:
    """A JSON string as the value it holds; anything else, or invalid JSON, unchanged."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def entries(value: object) -> object:
    """An object as a list of ``{"key": k, "value": v}``; anything else unchanged."""
    if isinstance(value, Mapping):
        return [{"key": key, "value": item} for key, item in value.items()]
    return value


_INDEX = re.compile(r"\d+")
_MISSING = object()


def pick(value: object, *paths: object) -> object:
    """Only the given dotted paths of an object, nested as they were.

    ``pick: "a", "b.c"`` or ``pick: list_of_paths``. A digit segment indexes a list
    (``users.0.name`` keeps ``users`` a list); absent paths are skipped; a value that
    is not an object comes back unchanged.
    """
    if not isinstance(value, Mapping):
        return value
    if len(paths) == 1 and isinstance(paths[0], list | tuple):
        paths = tuple(paths[0])
    picked: dict[str, Any] = {}
    for path in paths:
        if isinstance(path, str) and path:
            _copy_path(value, picked, path.split("."))
    return picked


def _copy_path(source: Mapping[str, Any], target: dict[str, Any], segments: list[str]) -> None:
    found: Any = source
    for segment in segments:
        if isinstance(found, Mapping):
            found = found.get(segment, _MISSING)
        elif isinstance(found, list) and _INDEX.fullmatch(segment) and int(segment) < len(found):
            found = found[int(segment)]
        else:
            return
        if found is _MISSING:
            return
    container: Any = target
    for segment, following in zip(segments, segments[1:], strict=False):
        wants_list = bool(_INDEX.fullmatch(following))
        child = _child(container, segment)
        if not isinstance(child, list if wants_list else dict):
            child = [] if wants_list else {}
            _set_child(container, segment, child)
        container = child
    _set_child(container, segments[-1], json.loads(json.dumps(found, default=str)))


def _child(container: Any, segment: str) -> Any:
    if isinstance(container, list):
        index = int(segment)
        return container[index] if index < len(container) else None
    return container.get(segment)


def _set_child(container: Any, segment: str, value: Any) -> None:
    if isinstance(container, list):
        index = int(segment)
        container.extend([None] * (index + 1 - len(container)))
        container[index] = value
    else:
        container[segment] = value
