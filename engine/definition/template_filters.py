"""The template filters Elastic Workflows has and python-liquid lacks, by name.

Kibana renders with LiquidJS and registers three filters of its own
(:mod:`engine.definition.kibana_filters`); LiquidJS's built-ins that python-liquid does
not ship, or reads otherwise, come with LiquidJS's meaning
(:mod:`engine.definition.liquidjs_filters`, its arithmetic in
:mod:`engine.definition.arithmetic_filters`). The filters that read an expression per
item are ``liquidjs_filters.EXPRESSION_FILTERS``.

Filters are plain functions ``(value, *args) -> value`` registered by
engine/definition/templates.py, the module python-liquid otherwise enters through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.definition.arithmetic_filters import (
    abs_,
    at_least,
    at_most,
    ceil,
    divided_by,
    floor,
    minus,
    modulo,
    plus,
    round_,
    times,
)
from engine.definition.kibana_filters import entries, json_parse, pick
from engine.definition.liquidjs_filters import (
    array_to_sentence_string,
    cgi_escape,
    date,
    date_to_long_string,
    date_to_rfc822,
    date_to_string,
    date_to_xmlschema,
    default,
    first,
    group_by,
    last,
    normalize_whitespace,
    number_of_words,
    pop,
    push,
    raw,
    shift,
    slugify,
    to_integer,
    unshift,
    uri_escape,
    xml_escape,
)

__all__ = ["FILTERS"]


FILTERS: dict[str, Callable[..., Any]] = {
    "default": default,
    "date": date,
    "first": first,
    "last": last,
    # LiquidJS's arithmetic is JavaScript's: `10 | divided_by: 3` is 3.3333333333333335,
    # `0.1 | plus: 0.2` is 0.30000000000000004, `2.5 | round` is 3, and text is a number.
    "plus": plus,
    "minus": minus,
    "times": times,
    "divided_by": divided_by,
    "modulo": modulo,
    "round": round_,
    "abs": abs_,
    "ceil": ceil,
    "floor": floor,
    "at_least": at_least,
    "at_most": at_most,
    "json_parse": json_parse,
    "entries": entries,
    "pick": pick,
    "push": push,
    "pop": pop,
    "shift": shift,
    "unshift": unshift,
    "group_by": group_by,
    "array_to_sentence_string": array_to_sentence_string,
    "to_integer": to_integer,
    "normalize_whitespace": normalize_whitespace,
    "number_of_words": number_of_words,
    "xml_escape": xml_escape,
    "cgi_escape": cgi_escape,
    "uri_escape": uri_escape,
    "slugify": slugify,
    "date_to_xmlschema": date_to_xmlschema,
    "date_to_rfc822": date_to_rfc822,
    "date_to_string": date_to_string,
    "date_to_long_string": date_to_long_string,
    "raw": raw,
}
