"""Block Kit validation as the Slack Web API applies it.

Slack answers a bad message with ``invalid_blocks`` and a bad view with
``invalid_arguments``, each error naming the offending field with a JSON pointer:
``must be less than 3001 characters [json-pointer:/blocks/0/text/text]``. We walk
the payload ourselves for the limits Slack enforces (slack_sdk checks only some of
them, and coerces a bare string into a text object where Slack refuses it), then
let slack_sdk's own models have a look for whatever we do not cover.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterable
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

MESSAGE_MAX_BLOCKS = 50
VIEW_MAX_BLOCKS = 100
MESSAGE_TEXT_MAX = 40_000
SECTION_TEXT_MAX = 3000
SECTION_FIELDS_MAX = 10
SECTION_FIELD_TEXT_MAX = 2000
HEADER_TEXT_MAX = 150
BUTTON_TEXT_MAX = 75
BUTTON_VALUE_MAX = 2000
URL_MAX = 3000
ACTION_ID_MAX = 255
BLOCK_ID_MAX = 255
ACTIONS_ELEMENTS_MAX = 25
CONTEXT_ELEMENTS_MAX = 10
INPUT_LABEL_MAX = 2000
INPUT_HINT_MAX = 2000
PLACEHOLDER_MAX = 150
SELECT_OPTIONS_MAX = 100
CHOICE_OPTIONS_MAX = 10  # checkboxes and radio buttons
OVERFLOW_OPTIONS_MAX = 5
OPTION_TEXT_MAX = 75
OPTION_VALUE_MAX = 150
PLAIN_TEXT_INPUT_MAX = 3000
MARKDOWN_BLOCK_TEXT_MAX = 12_000
IMAGE_ALT_TEXT_MAX = 2000
VIEW_TITLE_MAX = 24
VIEW_BUTTON_TEXT_MAX = 24
PRIVATE_METADATA_MAX = 3000
CALLBACK_ID_MAX = 255
EXTERNAL_ID_MAX = 255
VIEW_SIZE_MAX = 250_000

SELECTS_WITH_OPTIONS = {"static_select", "multi_static_select"}
CHOICES = {"checkboxes", "radio_buttons"}
ELEMENTS_WITHOUT_OPTIONS = {
    "datepicker",
    "timepicker",
    "datetimepicker",
    "plain_text_input",
    "email_text_input",
    "url_text_input",
    "number_input",
    "rich_text_input",
    "file_input",
    "external_select",
    "multi_external_select",
    "users_select",
    "multi_users_select",
    "conversations_select",
    "multi_conversations_select",
    "channels_select",
    "multi_channels_select",
    "workflow_button",
    "image",
}
KNOWN_ELEMENTS = SELECTS_WITH_OPTIONS | CHOICES | ELEMENTS_WITHOUT_OPTIONS | {"button", "overflow"}
PASS_THROUGH_BLOCKS = {"rich_text", "file", "video", "call", "context_actions", "table"}


def parse_json_field(value: Any) -> Any:
    """Decode a field that form-encoded calls send as a JSON string (``blocks``, ``view``)."""
    if isinstance(value, str):
        return json.loads(value)
    return value


def with_block_ids(blocks: list[Any]) -> list[Any]:
    """A copy of ``blocks`` where each block lacking a ``block_id`` gets a short random one."""
    blocks = copy.deepcopy(blocks)
    for block in blocks:
        if isinstance(block, dict) and "block_id" not in block:
            block["block_id"] = secrets.token_urlsafe(4)[:5]
    return blocks


def message_errors(blocks: Any) -> list[str]:
    """Slack's ``errors`` list for a message's blocks; empty when Slack would accept them."""
    checker = _Checker()
    checker.blocks(blocks, "/blocks", max_blocks=MESSAGE_MAX_BLOCKS)
    return checker.errors


def view_errors(view: Any) -> list[str]:
    """Slack's error list for a modal or App Home view; empty when Slack would accept it."""
    checker = _Checker()
    checker.view(view, "/view")
    return checker.errors


def view_size(view: Any) -> int:
    """Encoded size of a view, compared against Slack's 250 kB ``view_too_large`` limit."""
    return len(json.dumps(view).encode("utf-8"))


def as_slack_messages(errors: Iterable[str]) -> list[str]:
    """The ``response_metadata.messages`` form of an error list."""
    return [f"[ERROR] {error}" for error in errors]


class _Checker:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, message: str, pointer: str) -> None:
        self.errors.append(f"{message} [json-pointer:{pointer}]")

    # -- views ---------------------------------------------------------------

    def view(self, view: Any, at: str) -> None:
        if not isinstance(view, dict):
            self.fail("must be an object", at)
            return
        kind = view.get("type")
        if kind not in ("modal", "home"):
            self.fail("must be a valid enum value", f"{at}/type")
            return
        if kind == "modal":
            if "title" not in view:
                self.fail("missing required field: title", at)
            else:
                self.text(view["title"], f"{at}/title", max_len=VIEW_TITLE_MAX, plain=True)
            for button in ("submit", "close"):
                if button in view and view[button] is not None:
                    self.text(
                        view[button], f"{at}/{button}", max_len=VIEW_BUTTON_TEXT_MAX, plain=True
                    )
            blocks = view.get("blocks")
            has_inputs = isinstance(blocks, list) and any(
                isinstance(b, dict) and b.get("type") == "input" for b in blocks
            )
            if has_inputs and not view.get("submit"):
                self.fail("must provide submit when input blocks are present", f"{at}/submit")
        self.string(view.get("private_metadata"), f"{at}/private_metadata", PRIVATE_METADATA_MAX)
        self.string(view.get("callback_id"), f"{at}/callback_id", CALLBACK_ID_MAX)
        self.string(view.get("external_id"), f"{at}/external_id", EXTERNAL_ID_MAX)
        if "blocks" not in view:
            self.fail("missing required field: blocks", at)
            return
        before = len(self.errors)
        self.blocks(view["blocks"], f"{at}/blocks", max_blocks=VIEW_MAX_BLOCKS)
        if len(self.errors) == before:
            self.sdk_view(view, at)

    def sdk_view(self, view: dict[str, Any], at: str) -> None:
        try:
            View(**view).validate_json()
        except (SlackObjectFormationError, TypeError, KeyError, ValueError, AttributeError) as exc:
            self.fail(str(exc) or type(exc).__name__, at)

    # -- blocks --------------------------------------------------------------

    def blocks(self, blocks: Any, at: str, *, max_blocks: int) -> None:
        if not isinstance(blocks, list):
            self.fail("must be an array", at)
            return
        if len(blocks) > max_blocks:
            self.fail(f"no more than {max_blocks} items allowed", at)
        seen_block_ids: set[str] = set()
        for index, block in enumerate(blocks):
            pointer = f"{at}/{index}"
            before = len(self.errors)
            self.block(block, pointer)
            if isinstance(block, dict) and isinstance(block.get("block_id"), str):
                block_id = block["block_id"]
                if block_id in seen_block_ids:
                    self.fail(f"duplicate block_id: {block_id}", f"{pointer}/block_id")
                seen_block_ids.add(block_id)
            if len(self.errors) == before:
                self.sdk_block(block, pointer)

    def sdk_block(self, block: Any, at: str) -> None:
        try:
            parsed = Block.parse(block)
            if parsed is None:
                self.fail("failed to match all allowed schemas", at)
                return
            parsed.validate_json()
        except (SlackObjectFormationError, TypeError, KeyError, ValueError, AttributeError) as exc:
            self.fail(str(exc) or type(exc).__name__, at)

    def block(self, block: Any, at: str) -> None:
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            self.fail("failed to match all allowed schemas", at)
            return
        self.string(block.get("block_id"), f"{at}/block_id", BLOCK_ID_MAX)
        kind = block["type"]
        if kind == "section":
            self.section(block, at)
        elif kind == "header":
            self.required_text(block, "text", at, max_len=HEADER_TEXT_MAX, plain=True)
        elif kind == "actions":
            self.items(block, "elements", at, max_items=ACTIONS_ELEMENTS_MAX, each=self.element)
        elif kind == "context":
            self.items(block, "elements", at, max_items=CONTEXT_ELEMENTS_MAX, each=self.context)
        elif kind == "input":
            self.input(block, at)
        elif kind == "image":
            self.image(block, at)
        elif kind == "markdown":
            self.string(block.get("text"), f"{at}/text", MARKDOWN_BLOCK_TEXT_MAX, required=True)
        elif kind != "divider" and kind not in PASS_THROUGH_BLOCKS:
            self.fail("failed to match all allowed schemas", at)

    def section(self, block: dict[str, Any], at: str) -> None:
        if "text" not in block and "fields" not in block:
            self.fail("must provide either text or fields", at)
        if "text" in block:
            self.text(block["text"], f"{at}/text", max_len=SECTION_TEXT_MAX)
        if "fields" in block:
            self.items(
                block,
                "fields",
                at,
                max_items=SECTION_FIELDS_MAX,
                each=lambda field, ptr: self.text(field, ptr, max_len=SECTION_FIELD_TEXT_MAX),
            )
        if "accessory" in block:
            self.element(block["accessory"], f"{at}/accessory")

    def input(self, block: dict[str, Any], at: str) -> None:
        self.required_text(block, "label", at, max_len=INPUT_LABEL_MAX, plain=True)
        if "hint" in block:
            self.text(block["hint"], f"{at}/hint", max_len=INPUT_HINT_MAX, plain=True)
        if "element" not in block:
            self.fail("missing required field: element", at)
        else:
            self.element(block["element"], f"{at}/element")

    def image(self, block: dict[str, Any], at: str) -> None:
        self.string(block.get("alt_text"), f"{at}/alt_text", IMAGE_ALT_TEXT_MAX, required=True)
        if "image_url" not in block and "slack_file" not in block:
            self.fail("must provide either image_url or slack_file", at)
        self.string(block.get("image_url"), f"{at}/image_url", URL_MAX)

    def context(self, element: Any, at: str) -> None:
        if isinstance(element, dict) and element.get("type") == "image":
            self.string(element.get("alt_text"), f"{at}/alt_text", IMAGE_ALT_TEXT_MAX)
        else:
            self.text(element, at, max_len=SECTION_TEXT_MAX)

    # -- elements ------------------------------------------------------------

    def element(self, element: Any, at: str) -> None:
        if not isinstance(element, dict) or element.get("type") not in KNOWN_ELEMENTS:
            self.fail("failed to match all allowed schemas", at)
            return
        kind = element["type"]
        self.string(element.get("action_id"), f"{at}/action_id", ACTION_ID_MAX)
        if "placeholder" in element:
            self.text(
                element["placeholder"], f"{at}/placeholder", max_len=PLACEHOLDER_MAX, plain=True
            )
        if kind == "button":
            self.required_text(element, "text", at, max_len=BUTTON_TEXT_MAX, plain=True)
            self.string(element.get("value"), f"{at}/value", BUTTON_VALUE_MAX)
            self.string(element.get("url"), f"{at}/url", URL_MAX)
            if "style" in element and element["style"] not in ("primary", "danger"):
                self.fail("must be a valid enum value", f"{at}/style")
        elif kind in SELECTS_WITH_OPTIONS:
            self.select(element, at)
        elif kind in CHOICES:
            self.items(element, "options", at, max_items=CHOICE_OPTIONS_MAX, each=self.option)
        elif kind == "overflow":
            self.items(element, "options", at, max_items=OVERFLOW_OPTIONS_MAX, each=self.option)
        elif kind == "plain_text_input":
            max_length = element.get("max_length")
            if isinstance(max_length, int) and max_length > PLAIN_TEXT_INPUT_MAX:
                self.fail(f"must be less than {PLAIN_TEXT_INPUT_MAX + 1}", f"{at}/max_length")
            self.string(element.get("initial_value"), f"{at}/initial_value", PLAIN_TEXT_INPUT_MAX)

    def select(self, element: dict[str, Any], at: str) -> None:
        if "options" in element:
            self.items(element, "options", at, max_items=SELECT_OPTIONS_MAX, each=self.option)
        elif "option_groups" in element:
            groups = element["option_groups"]
            self.items(element, "option_groups", at, max_items=SELECT_OPTIONS_MAX, each=self.group)
            if isinstance(groups, list):
                total = sum(len(g.get("options", [])) for g in groups if isinstance(g, dict))
                if total > SELECT_OPTIONS_MAX:
                    self.fail(
                        f"no more than {SELECT_OPTIONS_MAX} items allowed", f"{at}/option_groups"
                    )
        else:
            self.fail("must provide either options or option_groups", at)

    def group(self, group: Any, at: str) -> None:
        if not isinstance(group, dict):
            self.fail("must be an object", at)
            return
        self.required_text(group, "label", at, max_len=OPTION_TEXT_MAX, plain=True)
        self.items(group, "options", at, max_items=SELECT_OPTIONS_MAX, each=self.option)

    def option(self, option: Any, at: str) -> None:
        if not isinstance(option, dict):
            self.fail("must be an object", at)
            return
        self.required_text(option, "text", at, max_len=OPTION_TEXT_MAX)
        self.string(option.get("value"), f"{at}/value", OPTION_VALUE_MAX, required=True)

    # -- primitives ----------------------------------------------------------

    def items(
        self, parent: dict[str, Any], key: str, at: str, *, max_items: int, each: Any
    ) -> None:
        pointer = f"{at}/{key}"
        values = parent.get(key)
        if values is None:
            self.fail(f"missing required field: {key}", at)
            return
        if not isinstance(values, list):
            self.fail("must be an array", pointer)
            return
        if not values:
            self.fail("must have at least 1 item", pointer)
        if len(values) > max_items:
            self.fail(f"no more than {max_items} items allowed", pointer)
        for index, value in enumerate(values):
            each(value, f"{pointer}/{index}")

    def required_text(
        self, parent: dict[str, Any], key: str, at: str, *, max_len: int, plain: bool = False
    ) -> None:
        if key not in parent:
            self.fail(f"missing required field: {key}", at)
        else:
            self.text(parent[key], f"{at}/{key}", max_len=max_len, plain=plain)

    def text(self, obj: Any, at: str, *, max_len: int, plain: bool = False) -> None:
        allowed = ("plain_text",) if plain else ("plain_text", "mrkdwn")
        if not isinstance(obj, dict):
            self.fail("must be an object", at)
            return
        if obj.get("type") not in allowed:
            self.fail("must be a valid enum value", f"{at}/type")
        self.string(obj.get("text"), f"{at}/text", max_len, required=True)

    def string(self, value: Any, at: str, max_len: int, *, required: bool = False) -> None:
        if value is None:
            if required:
                self.fail("missing required field", at)
            return
        if not isinstance(value, str):
            self.fail("must be a string", at)
        elif len(value) > max_len:
            self.fail(f"must be less than {max_len + 1} characters", at)
        elif required and not value:
            self.fail("must be more than 0 characters", at)
