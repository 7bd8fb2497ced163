"""The Cases API's searches, for :class:`elastic_emulator.kibana.KibanaEmulator`: pure
functions over one space's cases.

- ``GET /api/cases/_find``: ``owner``, ``status``, ``severity``, ``tags``, ``assignees``,
  ``reporters``, ``category`` (each repeatable: any of the values), ``search`` in
  ``searchFields`` (``title``, ``description``; both by default; words joined by
  ``defaultSearchOperator``, ``OR`` by default, each a case-insensitive substring),
  ``from``/``to`` on the creation time, ``sortField`` (``createdAt`` by default) and
  ``sortOrder`` (``desc``), ``page`` and ``perPage`` (default 20, at most 100). The answer
  is ``{cases, page, per_page, total, count_open_cases, count_in_progress_cases,
  count_closed_cases}``, the counts over the filters but ``status``, and each case without
  its comments, as Kibana's.
- ``GET /api/cases/alerts/{alert_id}``: the cases an alert is attached to (optionally of
  ``owner``), as ``[{id, title, description, status, createdAt, totals}]``.

Not modelled: ``customFields`` filters, ``simple_query_string`` syntax (quotes, ``+``,
``-``, wildcards), ``incremental_id.text``, and Elasticsearch's relevance.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MAX_PER_PAGE = 100
_SORT_FIELDS = {"title": "title", "category": "category", "createdAt": "created_at",
                "updatedAt": "updated_at", "closedAt": "closed_at", "status": "status",
                "severity": "severity"}
_SEVERITY_ORDER = {"low": 0, "medium": 1, "high": 2, "critical": 3}


class SearchError(Exception):
    """A search Kibana answers 400 to."""


def find_cases(cases: list[dict[str, Any]], query: Callable[[str], list[str]]
               ) -> dict[str, Any]:
    """The ``_find`` answer for ``cases``; ``query(name)`` gives a parameter's values."""
    page = _positive(query, "page", 1)
    per_page = _positive(query, "perPage", 20)
    if per_page > MAX_PER_PAGE:
        raise SearchError(f"The number of documents is too high. Paginating through more "
                          f"than {MAX_PER_PAGE} documents is not possible.")
    sort_field = (query("sortField") or ["createdAt"])[0]
    if sort_field not in _SORT_FIELDS:
        raise SearchError(f'Invalid value "{sort_field}" supplied to "sortField"')
    matching = [c for c in cases if _matches(c, query, with_status=False)]
    statuses = set(query("status"))
    found = [c for c in matching if not statuses or c["status"] in statuses]
    key = _SORT_FIELDS[sort_field]
    found.sort(key=lambda c: (c.get(key) is None, _SEVERITY_ORDER.get(c[key], 0)
                              if key == "severity" else str(c.get(key) or "")),
               reverse=(query("sortOrder") or ["desc"])[0] == "desc")
    window = found[(page - 1) * per_page:page * per_page]
    counts = {s: sum(1 for c in matching if c["status"] == s)
              for s in ("open", "in-progress", "closed")}
    return {"cases": [{**c, "comments": []} for c in window], "page": page,
            "per_page": per_page, "total": len(found),
            "count_open_cases": counts["open"],
            "count_in_progress_cases": counts["in-progress"],
            "count_closed_cases": counts["closed"]}


def cases_of_alert(cases: list[dict[str, Any]], alert_id: str, owners: list[str]
                   ) -> list[dict[str, Any]]:
    """The cases ``alert_id`` is attached to, in Kibana's related-case shape."""
    related = []
    for case in cases:
        if owners and case["owner"] not in owners:
            continue
        attached = [c for c in case["comments"] if c["type"] == "alert"
                    and alert_id in (c["alertId"] if isinstance(c["alertId"], list)
                                     else [c["alertId"]])]
        if attached:
            related.append({"id": case["id"], "title": case["title"],
                            "description": case["description"], "status": case["status"],
                            "createdAt": case["created_at"],
                            "totals": {"alerts": case["totalAlerts"], "events": 0,
                                       "userComments": case["totalComment"]}})
    return related


def _positive(query: Callable[[str], list[str]], name: str, default: int) -> int:
    raw = (query(name) or [str(default)])[0]
    if not raw.isdigit() or int(raw) < 1:
        raise SearchError(f'Invalid value "{raw}" supplied to "{name}"')
    return int(raw)


def _matches(case: dict[str, Any], query: Callable[[str], list[str]], *,
             with_status: bool) -> bool:
    for name in ("owner", "severity", "category") + (("status",) if with_status else ()):
        wanted = query(name)
        if wanted and case.get(name) not in wanted:
            return False
    tags = query("tags")
    if tags and not set(tags) & set(case["tags"]):
        return False
    assignees = query("assignees")
    if assignees and not {a["uid"] for a in case["assignees"]} & set(assignees):
        return False
    reporters = query("reporters")
    if reporters and case["created_by"]["username"] not in reporters:
        return False
    created = case["created_at"]
    if query("from") and created < query("from")[0]:
        return False
    if query("to") and created >= query("to")[0]:
        return False
    search = (query("search") or [""])[0].strip()
    if search:
        fields = query("searchFields") or ["title", "description"]
        text = " ".join(str(case.get(f) or "") for f in fields).lower()
        words = [w.lower() for w in search.split()]
        hits = [w in text for w in words]
        if not (all(hits) if (query("defaultSearchOperator") or ["OR"])[0] == "AND"
                else any(hits)):
            return False
    return True
