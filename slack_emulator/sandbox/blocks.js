// Block Kit to DOM: the blocks of messages, modals and Home tabs, and their elements.
//
// ctx carries who is looking (me, users, groups, channels, conversations), what a used
// element does (onAction(element, blockId, value)), and for views the form being filled
// (ctx.form: block_id -> {get(), required, label}) and its inline errors (ctx.errors).

import { el, renderMrkdwn, renderPlain, renderText } from "./mrkdwn.js";

let uid = 0;
const nextId = (prefix) => `${prefix}-${(uid += 1)}`;

export function renderBlocks(blocks, ctx) {
  const out = el("div", "blocks");
  for (const block of blocks || []) {
    const node = renderBlock(block, ctx);
    if (node) {
      node.dataset.blockType = block.type;
      if (block.block_id) node.dataset.blockId = block.block_id;
      out.append(node);
    }
  }
  return out;
}

function renderBlock(block, ctx) {
  switch (block.type) {
    case "header": return el("h3", "block-header", block.text ? block.text.text : "");
    case "section": return section(block, ctx);
    case "context": return context(block, ctx);
    case "actions": return actions(block, ctx);
    case "divider": return el("hr", "block-divider");
    case "image": return imageBlock(block);
    case "input": return input(block, ctx);
    case "rich_text": return richText(block, ctx);
    default: return el("div", "block-unknown", `(a ${block.type} block, which the sandbox does not draw)`);
  }
}

function section(block, ctx) {
  const node = el("div", "block-section");
  const body = el("div", "section-body");
  if (block.text) body.append(wrap("div", "section-text", renderText(block.text, ctx)));
  if (block.fields && block.fields.length) {
    const grid = el("div", "section-fields");
    for (const field of block.fields) grid.append(wrap("div", "section-field", renderText(field, ctx)));
    body.append(grid);
  }
  node.append(body);
  if (block.accessory) {
    const accessory = el("div", "section-accessory");
    accessory.append(element(block.accessory, block.block_id, ctx));
    node.append(accessory);
  }
  return node;
}

function context(block, ctx) {
  const node = el("div", "block-context");
  for (const item of block.elements || []) {
    if (item.type === "image") node.append(imagePlaceholder(item.alt_text, "context-image"));
    else node.append(wrap("span", "context-item", renderText(item, ctx)));
  }
  return node;
}

function actions(block, ctx) {
  const node = el("div", "block-actions");
  for (const item of block.elements || []) node.append(element(item, block.block_id, ctx));
  return node;
}

// No picture is fetched from elsewhere: the sandbox shows what it would be.
function imagePlaceholder(alt, className) {
  return el("span", `image-placeholder ${className || ""}`, `🖼 ${alt || "image"}`);
}

function imageBlock(block) {
  const node = el("figure", "block-image");
  if (block.title) node.append(el("figcaption", null, block.title.text));
  node.append(imagePlaceholder(block.alt_text));
  return node;
}

function wrap(tag, className, child) {
  const node = el(tag, className);
  node.append(child);
  return node;
}

// -- inputs ------------------------------------------------------------------------------------

function input(block, ctx) {
  const node = el("div", "block-input");
  const id = nextId("field");
  const label = el("label", "input-label", block.label ? block.label.text : "");
  label.htmlFor = id;
  if (block.optional) label.append(el("span", "optional", " (optional)"));
  node.append(label);
  const control = formElement(block.element, id, ctx);
  node.append(control.node);
  if (block.hint) node.append(el("div", "input-hint", block.hint.text));
  const error = el("div", "input-error");
  error.setAttribute("role", "alert");
  node.append(error);
  if (ctx.form) {
    ctx.form.set(block.block_id, {
      get: control.get, required: !block.optional, label: block.label ? block.label.text : "",
      showError(message) {
        error.textContent = message || "";
        node.classList.toggle("has-error", Boolean(message));
      },
    });
  }
  if (block.dispatch_action && ctx.onAction) {
    control.node.addEventListener("change", () => ctx.onAction(block.element, block.block_id, control.get()));
  }
  return node;
}

function optionText(option, ctx) {
  return option && option.text ? renderText(option.text, ctx) : renderPlain("");
}

function optionsOf(elementSpec) {
  const found = [...(elementSpec.options || [])];
  for (const group of elementSpec.option_groups || []) found.push(...(group.options || []));
  return found;
}

function selectControl(elementSpec, id, items, multiple, initial) {
  const select = el("select", "select");
  select.id = id;
  select.multiple = multiple;
  if (!multiple) {
    const none = el("option", null, elementSpec.placeholder ? elementSpec.placeholder.text : "Select an item");
    none.value = "";
    select.append(none);
  }
  if (elementSpec.option_groups && elementSpec.option_groups.length) {
    for (const group of elementSpec.option_groups) {
      const optgroup = el("optgroup");
      optgroup.label = group.label ? group.label.text : "";
      for (const option of group.options || []) optgroup.append(optionNode(option.value, option.text.text, initial));
      select.append(optgroup);
    }
  }
  for (const [value, text] of items) select.append(optionNode(value, text, initial));
  return select;
}

function optionNode(value, text, initial) {
  const option = el("option", null, text);
  option.value = value;
  option.selected = initial.includes(value);
  return option;
}

function pickerItems(kind, ctx) {
  if (kind.includes("users")) {
    return (ctx.users || []).filter((u) => !u.is_bot).map((u) => [u.id, `${u.display_name} (${u.real_name})`]);
  }
  return (ctx.conversations || []).filter((c) => kind.includes("conversations") || !c.is_im)
    .map((c) => [c.id, c.is_im ? `DM: ${c.name}` : `#${c.name}`]);
}

// A form control for an element; get() answers what Slack's state would hold, as the
// emulator's driver takes it (text, option values, ids, dates, epoch seconds).
export function formElement(spec, id, ctx) {
  const kind = spec.type;
  const initialValues = (spec.initial_options || []).map((o) => o.value);
  if (spec.initial_option) initialValues.push(spec.initial_option.value);
  switch (kind) {
    case "plain_text_input":
    case "email_text_input":
    case "url_text_input":
    case "number_input":
    case "rich_text_input": {
      const multiline = spec.multiline || kind === "rich_text_input";
      const field = el(multiline ? "textarea" : "input", "text-input");
      field.id = id;
      if (!multiline) field.type = "text";
      if (kind === "email_text_input") field.inputMode = "email";
      if (kind === "url_text_input") field.inputMode = "url";
      if (kind === "number_input") field.inputMode = spec.is_decimal_allowed ? "decimal" : "numeric";
      if (spec.placeholder) field.placeholder = spec.placeholder.text;
      if (spec.max_length) field.maxLength = spec.max_length;
      if (spec.initial_value !== undefined && typeof spec.initial_value !== "object") field.value = spec.initial_value;
      const get = () => (field.value === "" ? null : field.value);
      return { node: field, get };
    }
    case "datepicker":
    case "timepicker": {
      const field = el("input", "text-input");
      field.id = id;
      field.type = kind === "datepicker" ? "date" : "time";
      field.value = (kind === "datepicker" ? spec.initial_date : spec.initial_time) || "";
      return { node: field, get: () => field.value || null };
    }
    case "datetimepicker": {
      // The browser's own time zone, as Slack's client uses the device's.
      const field = el("input", "text-input");
      field.id = id;
      field.type = "datetime-local";
      if (spec.initial_date_time) {
        const at = new Date(spec.initial_date_time * 1000);
        const local = new Date(at.getTime() - at.getTimezoneOffset() * 60000);
        field.value = local.toISOString().slice(0, 16);
      }
      const get = () => (field.value ? Math.floor(new Date(field.value).getTime() / 1000) : null);
      return { node: field, get };
    }
    case "radio_buttons":
    case "checkboxes": {
      const group = el("div", kind === "radio_buttons" ? "radio-group" : "checkbox-group");
      group.id = id;
      const name = nextId("choice");
      const boxes = [];
      for (const option of optionsOf(spec)) {
        const row = el("label", "choice");
        const box = el("input");
        box.type = kind === "radio_buttons" ? "radio" : "checkbox";
        box.name = name;
        box.value = option.value;
        box.checked = initialValues.includes(option.value);
        boxes.push(box);
        row.append(box, wrap("span", "choice-text", optionText(option, ctx)));
        if (option.description) row.append(wrap("span", "choice-description", renderText(option.description, ctx)));
        group.append(row);
      }
      const get = kind === "radio_buttons"
        ? () => (boxes.find((b) => b.checked) || {}).value || null
        : () => boxes.filter((b) => b.checked).map((b) => b.value);
      return { node: group, get };
    }
    case "static_select":
    case "multi_static_select":
    case "external_select":
    case "multi_external_select": {
      const items = (spec.option_groups && spec.option_groups.length ? [] : optionsOf(spec))
        .map((o) => [o.value, o.text.text]);
      const multiple = kind.startsWith("multi_");
      const select = selectControl(spec, id, items, multiple, initialValues);
      return selectResult(select, multiple);
    }
    case "users_select":
    case "multi_users_select":
    case "conversations_select":
    case "multi_conversations_select":
    case "channels_select":
    case "multi_channels_select": {
      const multiple = kind.startsWith("multi_");
      const initial = [].concat(spec.initial_user || spec.initial_users || spec.initial_conversation
        || spec.initial_conversations || spec.initial_channel || spec.initial_channels || []);
      const select = selectControl(spec, id, pickerItems(kind, ctx), multiple, initial);
      return selectResult(select, multiple);
    }
    default: {
      const node = el("div", "block-unknown", `(a ${kind} element, which the sandbox does not draw)`);
      return { node, get: () => null };
    }
  }
}

function selectResult(select, multiple) {
  const get = multiple
    ? () => [...select.selectedOptions].map((o) => o.value)
    : () => select.value || null;
  return { node: select, get };
}

// -- interactive elements in messages and in views -----------------------------------------------

function element(spec, blockId, ctx) {
  if (spec.type === "button") return button(spec, blockId, ctx);
  if (spec.type === "image") return imagePlaceholder(spec.alt_text);
  if (spec.type === "overflow") return overflow(spec, blockId, ctx);
  const control = formElement(spec, nextId("element"), ctx);
  control.node.addEventListener("change", () => ctx.onAction(spec, blockId, control.get()));
  return control.node;
}

// Slack's ⋮ menu: each option is an action whose value is the option's.
function overflow(spec, blockId, ctx) {
  const node = el("span", "overflow");
  const toggle = el("button", "btn btn-overflow", "⋮");
  toggle.type = "button";
  toggle.dataset.actionId = spec.action_id || "";
  toggle.setAttribute("aria-label", "More actions");
  toggle.setAttribute("aria-haspopup", "menu");
  const menu = el("div", "overflow-menu");
  menu.setAttribute("role", "menu");
  menu.hidden = true;
  for (const option of optionsOf(spec)) {
    const item = el("button", "overflow-item");
    item.type = "button";
    item.setAttribute("role", "menuitem");
    item.append(optionText(option, ctx));
    item.addEventListener("click", () => {
      menu.hidden = true;
      const act = () => ctx.onAction(spec, blockId, option.value, toggle);
      if (spec.confirm) confirmDialog(spec.confirm, ctx).then((yes) => yes && act());
      else act();
    });
    menu.append(item);
  }
  toggle.addEventListener("click", () => { menu.hidden = !menu.hidden; });
  node.append(toggle, menu);
  return node;
}

function button(spec, blockId, ctx) {
  const node = el("button", `btn${spec.style ? ` btn-${spec.style}` : ""}`, spec.text ? spec.text.text : "");
  node.type = "button";
  node.dataset.actionId = spec.action_id || "";
  node.addEventListener("click", () => {
    if (spec.url && /^https?:/i.test(spec.url)) window.open(spec.url, "_blank", "noopener");
    const act = () => ctx.onAction(spec, blockId, spec.value ?? null, node);
    if (spec.confirm) confirmDialog(spec.confirm, ctx).then((yes) => yes && act());
    else act();
  });
  return node;
}

// Slack's confirmation dialog: resolves true when confirmed.
export function confirmDialog(confirm, ctx) {
  return new Promise((resolve) => {
    const layer = document.getElementById("layer");
    const backdrop = el("div", "backdrop confirm-backdrop");
    const dialog = el("div", "dialog confirm");
    dialog.setAttribute("role", "alertdialog");
    dialog.append(el("h2", "dialog-title", confirm.title ? confirm.title.text : "Are you sure?"));
    dialog.append(wrap("div", "dialog-text", confirm.text ? renderText(confirm.text, ctx) : renderMrkdwn("", ctx)));
    const footer = el("div", "dialog-footer");
    const no = el("button", "btn", confirm.deny ? confirm.deny.text : "Cancel");
    const yes = el("button", `btn ${confirm.style === "danger" ? "btn-danger" : "btn-primary"}`,
      confirm.confirm ? confirm.confirm.text : "Yes");
    no.type = "button";
    yes.type = "button";
    const done = (answer) => { backdrop.remove(); resolve(answer); };
    no.addEventListener("click", () => done(false));
    yes.addEventListener("click", () => done(true));
    footer.append(no, yes);
    dialog.append(footer);
    backdrop.append(dialog);
    layer.append(backdrop);
    yes.focus();
  });
}

// -- rich text (what people type in Slack; apps send it too) -------------------------------------

function richText(block, ctx) {
  const node = el("div", "block-rich-text");
  for (const part of block.elements || []) node.append(richPart(part, ctx));
  return node;
}

function richPart(part, ctx) {
  switch (part.type) {
    case "rich_text_section": return richInline(part.elements, el("div"), ctx);
    case "rich_text_preformatted": return richInline(part.elements, el("pre", "code-block"), ctx);
    case "rich_text_quote": return richInline(part.elements, el("blockquote"), ctx);
    case "rich_text_list": {
      const list = el(part.style === "ordered" ? "ol" : "ul");
      for (const item of part.elements || []) list.append(richInline(item.elements, el("li"), ctx));
      return list;
    }
    default: return el("div", "block-unknown", `(${part.type})`);
  }
}

function richInline(items, node, ctx) {
  for (const item of items || []) {
    let child;
    if (item.type === "text") child = document.createTextNode(item.text || "");
    else if (item.type === "link") {
      const text = item.text || item.url || "";
      if (/^(https?:|mailto:)/i.test(item.url || "")) {
        child = el("a", null, text);
        child.href = item.url;
        child.target = "_blank";
        child.rel = "noopener noreferrer";
      } else child = document.createTextNode(text);
    } else if (item.type === "user") child = renderMrkdwn(`<@${item.user_id}>`, ctx);
    else if (item.type === "channel") child = renderMrkdwn(`<#${item.channel_id}>`, ctx);
    else if (item.type === "usergroup") child = renderMrkdwn(`<!subteam^${item.usergroup_id}>`, ctx);
    else if (item.type === "broadcast") child = renderMrkdwn(`<!${item.range}>`, ctx);
    else if (item.type === "emoji") child = document.createTextNode(item.unicode ? String.fromCodePoint(parseInt(item.unicode, 16)) : `:${item.name}:`);
    else child = document.createTextNode("");
    const style = item.style || {};
    for (const [flag, tag] of [["code", "code"], ["strike", "s"], ["italic", "em"], ["bold", "strong"]]) {
      if (style[flag]) child = wrap(tag, null, child);
    }
    node.append(child);
  }
  return node;
}
