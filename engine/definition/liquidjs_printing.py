"""What LiquidJS prints for a value, and the output and echo nodes that print so.

LiquidJS runs in JavaScript: nil and undefined print nothing, a list its items one after
another, a number as JavaScript writes it (``2.0`` is ``2``), an object
``[object Object]``. python-liquid prints as Python does, so an output's node is
replaced. The tags that build these nodes are in :mod:`engine.definition.liquidjs_parser`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TextIO

from liquid import RenderContext, is_undefined
from liquid.builtin.expressions.primitive import Blank, Empty
from liquid.builtin.output import OutputNode
from liquid.builtin.tags.echo_tag import EchoNode

from engine.definition import jsvalue

__all__ = ["LiquidJSEchoNode", "LiquidJSOutputNode", "liquidjs_text"]


def liquidjs_text(value: object) -> str:
    """What LiquidJS prints for a value: nil and undefined print nothing, a list its items
    one after another, a number as JavaScript writes it (``2.0`` is ``2``), an object
    ``[object Object]``."""
    kind = type(value)
    if kind is int or kind is float or kind is bool:
        return jsvalue.text(value)
    if isinstance(value, str):
        return value
    if value is None or is_undefined(value) or isinstance(value, Empty | Blank):
        return ""
    if isinstance(value, list | tuple | range):
        return "".join(liquidjs_text(item) for item in value)
    if isinstance(value, bool | int | float | Mapping):
        return jsvalue.text(value)
    return str(value)


def _print_as_liquidjs(node: OutputNode, context: RenderContext, buffer: TextIO) -> int:
    value = node.expression.evaluate(context)
    return buffer.write(value if type(value) is str else liquidjs_text(value))


class LiquidJSOutputNode(OutputNode):
    """An output that prints its value as LiquidJS does."""

    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return _print_as_liquidjs(self, context, buffer)

    async def render_to_output_async(self, context: RenderContext, buffer: TextIO) -> int:
        return _print_as_liquidjs(self, context, buffer)


class LiquidJSEchoNode(EchoNode):
    """``{% echo %}``, printing as LiquidJS does."""

    __slots__ = ()

    def render_to_output(self, context: RenderContext, buffer: TextIO) -> int:
        return _print_as_liquidjs(self, context, buffer)

    async def render_to_output_async(self, context: RenderContext, buffer: TextIO) -> int:
        return _print_as_liquidjs(self, context, buffer)
