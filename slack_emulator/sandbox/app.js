// The sandbox page: the workspace as the chosen person sees it, kept fresh by polling
// /sandbox/api/state, and every click, submission and slash command sent to the app
// through the emulator's driver (/sandbox/api/...), signed as Slack signs them.

import { el, renderMrkdwn, clock } from "./mrkdwn.js";
import { renderBlocks } from "./blocks.js";

const POLL_MS = 700;
const REQUIRED = "Please complete this required field.";
const ui = {
  user: localStorage.getItem("sandbox.user") || "U0ALICE",
  conversation: "C0REVIEWS",
  app: null, // "home" or "messages" while the app's pages are open
  thread: null, // {conversation, ts}
  homeAnswer: null,
};
let state = null;
let pollTimer = null;
const notices = []; // the sandbox's own "only visible to you" lines (slash command outcomes)
const dismissed = new Set();
const modal = { key: null, form: null, errors: {} };

const $ = (id) => document.getElementById(id);

async function api(path, body) {
  const response = await fetch(`/sandbox/api/${path}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  let answer = {};
  try { answer = await response.json(); } catch (error) { answer = { error: response.statusText }; }
  if (!response.ok) answer.error = answer.error || `HTTP ${response.status}`;
  return answer;
}

function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 6000);
}

// Whatever the app answered, said as Slack's client would say it.
function reportAnswer(answer, what) {
  if (answer.error) toast(`Sandbox: ${answer.error}`);
  else if (answer.status !== null && (answer.status < 200 || answer.status >= 300)) {
    toast(`The app answered HTTP ${answer.status} to ${what}.`);
  }
}

async function refresh(force) {
  const since = force || !state ? "" : state.version;
  let next;
  try {
    const response = await fetch(`/sandbox/api/state?user=${encodeURIComponent(ui.user)}&since=${since}`);
    next = await response.json();
    if (!response.ok) throw new Error(next.error || response.statusText);
    document.body.classList.remove("offline");
  } catch (error) {
    document.body.classList.add("offline");
    return;
  }
  if (next.unchanged) return;
  state = next;
  render();
}

function schedule() {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(async () => { await refresh(false); schedule(); }, POLL_MS);
}

function ctx(extra) {
  return { me: state.me, users: state.users, groups: state.groups, channels: state.channels,
    conversations: state.conversations, ...extra };
}

function conversation(id) {
  return state.conversations.find((c) => c.id === id);
}

// -- rendering -------------------------------------------------------------------------------

function render() {
  document.body.dataset.user = state.me.id; // whose view is drawn (tests wait on it)
  renderSidebar();
  renderMain();
  renderSide();
  renderModal();
}

function renderSidebar() {
  $("team").textContent = state.team.name;
  const switcher = $("switcher");
  switcher.replaceChildren(...state.users.filter((u) => !u.is_bot).map((u) => {
    const option = el("option", null, `${u.display_name}${u.title ? ` — ${u.title}` : ""}`);
    option.value = u.id;
    option.selected = u.id === ui.user;
    return option;
  }));
  $("whoami").textContent = `${state.me.real_name} · ${state.me.tz}`;
  const channels = state.conversations.filter((c) => !c.is_im);
  if (!ui.app && !conversation(ui.conversation) && channels.length) ui.conversation = channels[0].id;
  $("channel-list").replaceChildren(...channels.map((c) => {
    const item = el("li");
    const link = el("button", `nav-item${!ui.app && c.id === ui.conversation ? " active" : ""}`, `# ${c.name}`);
    link.type = "button";
    link.addEventListener("click", () => { ui.app = null; ui.conversation = c.id; ui.thread = null; render(); });
    item.append(link);
    return item;
  }));
  const item = el("li");
  const app = el("button", `nav-item${ui.app ? " active" : ""}`, "Signoff");
  app.type = "button";
  app.addEventListener("click", () => openApp("home"));
  item.append(app);
  $("app-list").replaceChildren(item);
}

async function openApp(tab) {
  ui.app = tab;
  ui.thread = null;
  render();
  if (tab === "home") {
    const answer = await api("home", { user: ui.user });
    ui.homeAnswer = answer; // shown on the Home tab itself when no view was published
    if (answer.error) toast(`Sandbox: ${answer.error}`);
    await refresh(true);
  }
}

function renderMain() {
  const header = $("pane-header");
  const tabs = $("tabs");
  const dm = state.conversations.find((c) => c.is_im);
  if (ui.app) {
    header.replaceChildren(el("span", "pane-title", "Signoff"), el("span", "app-badge", "APP"));
    tabs.hidden = false;
    tabs.replaceChildren(...[["home", "Home"], ["messages", "Messages"]].map(([key, label]) => {
      const tab = el("button", `tab${ui.app === key ? " active" : ""}`, label);
      tab.type = "button";
      tab.addEventListener("click", () => (key === "home" ? openApp("home") : (ui.app = key, render())));
      return tab;
    }));
  } else {
    const current = conversation(ui.conversation);
    header.replaceChildren(el("span", "pane-title", current ? `# ${current.name}` : ""));
    tabs.hidden = true;
  }
  $("home").hidden = ui.app !== "home";
  $("messages").hidden = ui.app === "home";
  $("composer").hidden = ui.app === "home";
  const where = ui.app ? (dm ? dm.id : null) : ui.conversation;
  $("composer-input").placeholder = ui.app ? "Message Signoff, or type /approvals"
    : `Type a slash command in #${(conversation(where) || {}).name || ""}, e.g. /approvals`;
  if (ui.app === "home") renderHome();
  else renderMessages(where, ui.app ? "app" : where);
}

function renderHome() {
  const pane = $("home");
  if (!state.home) {
    const status = ui.homeAnswer ? (ui.homeAnswer.error || `the app answered HTTP ${ui.homeAnswer.status}`) : "";
    pane.replaceChildren(el("div", "empty", `Signoff has not published a Home tab for ${state.me.display_name}.`),
      el("div", "empty-detail", status ? `app_home_opened was sent; ${status}.` : ""));
    return;
  }
  const home = state.home;
  pane.replaceChildren(renderBlocks(home.blocks, ctx({
    form: new Map(),
    onAction: (spec, blockId, value, node) => act("view/click", {
      view_id: home.id, action_id: spec.action_id, block_id: blockId, value }, node),
  })));
}

// Messages, my ephemerals and the sandbox's own notes (kept under noticeKey), by time.
function timeline(where, noticeKey) {
  const items = [];
  const current = conversation(where);
  if (current) for (const message of current.messages) items.push({ message, channel: where });
  for (const record of state.ephemeral) {
    if (record.channel === where && !dismissed.has(record.ts) && !record.message.thread_ts) {
      items.push({ message: record.message, channel: where, ephemeral: true });
    }
  }
  for (const notice of notices) {
    if (notice.channel === noticeKey && notice.user === ui.user && !dismissed.has(notice.ts)) {
      items.push({ message: notice, channel: where, ephemeral: true, local: true });
    }
  }
  return items.sort((a, b) => Number(a.message.ts) - Number(b.message.ts));
}

function renderMessages(where, noticeKey) {
  const pane = $("messages");
  const atBottom = pane.scrollHeight - pane.scrollTop - pane.clientHeight < 40;
  const items = timeline(where, noticeKey);
  if (!items.length) {
    pane.replaceChildren(el("div", "empty", "No messages here yet."));
    return;
  }
  pane.replaceChildren(...items.map((item) => messageNode(item, true)));
  if (atBottom || !renderMessages.scrolled) {
    pane.scrollTop = pane.scrollHeight;
    renderMessages.scrolled = true;
  }
}

function author(message) {
  if (message.local) return { name: "Slackbot", initial: "S" };
  const user = state.users.find((u) => u.id === message.user);
  const name = user ? (user.is_bot ? user.real_name : user.display_name) : (message.username || "unknown");
  return { name, initial: name.slice(0, 1).toUpperCase(), bot: Boolean(message.bot_id) };
}

function messageNode(item, withThread) {
  const { message, channel } = item;
  const node = el("article", `message${item.ephemeral ? " ephemeral" : ""}`);
  node.dataset.ts = message.ts;
  const who = author(message);
  node.append(el("div", "avatar", who.initial));
  const body = el("div", "message-body");
  const meta = el("div", "message-meta");
  meta.append(el("span", "author", who.name));
  if (who.bot) meta.append(el("span", "app-badge", "APP"));
  meta.append(el("time", "message-time", clock(message.ts, state.me.tz)));
  if (message.edited) meta.append(el("span", "edited", "(edited)"));
  body.append(meta);
  const onAction = (spec, blockId, value, button) => act("click", {
    channel, ts: message.ts, action_id: spec.action_id, block_id: blockId, value }, button);
  const context = ctx({ onAction });
  if (message.blocks && message.blocks.length) body.append(renderBlocks(message.blocks, context));
  else body.append(wrapText(message.text, context));
  for (const attachment of message.attachments || []) body.append(attachmentNode(attachment, context));
  if (item.ephemeral) {
    const footer = el("div", "ephemeral-note", "Only visible to you");
    const dismiss = el("button", "link-button", "Dismiss");
    dismiss.type = "button";
    dismiss.addEventListener("click", () => { dismissed.add(message.ts); render(); });
    footer.append(" · ", dismiss);
    body.append(footer);
  }
  if (withThread && message.replies && message.replies.length) {
    const count = message.replies.length;
    const link = el("button", "link-button thread-link", `${count} ${count === 1 ? "reply" : "replies"}`);
    link.type = "button";
    link.addEventListener("click", () => { ui.thread = { conversation: channel, ts: message.ts }; renderSide(); });
    body.append(link);
  }
  node.append(body);
  return node;
}

function wrapText(text, context) {
  const node = el("div", "message-text");
  node.append(renderMrkdwn(text || "", context));
  return node;
}

function attachmentNode(attachment, context) {
  const node = el("div", "attachment");
  if (attachment.color && /^#?[0-9a-f]{3,6}$/i.test(attachment.color)) {
    node.style.borderLeftColor = attachment.color.startsWith("#") ? attachment.color : `#${attachment.color}`;
  }
  if (attachment.blocks) node.append(renderBlocks(attachment.blocks, context));
  else if (attachment.text || attachment.fallback) node.append(wrapText(attachment.text || attachment.fallback, context));
  return node;
}

function renderSide() {
  const side = $("side");
  const current = ui.thread && conversation(ui.thread.conversation);
  const parent = current && current.messages.find((m) => m.ts === ui.thread.ts);
  if (parent) {
    const header = el("div", "side-header");
    header.append(el("span", "side-title", `Thread · #${current.name}`));
    const close = el("button", "link-button", "Close");
    close.type = "button";
    close.addEventListener("click", () => { ui.thread = null; renderSide(); });
    header.append(close);
    const replies = [...parent.replies];
    for (const record of state.ephemeral) {
      if (record.message.thread_ts === parent.ts && !dismissed.has(record.ts)) replies.push(record.message);
    }
    side.replaceChildren(header, messageNode({ message: parent, channel: current.id }, false),
      el("div", "thread-divider", `${parent.replies.length} replies`),
      ...replies.map((message) => messageNode({ message, channel: current.id }, false)));
    return;
  }
  ui.thread = null;
  const help = el("div", "panel help");
  help.append(el("h4", null, "Sandbox"), renderMrkdwn(
    "Act as anyone with the switcher at the top left. Each review says who may decide; "
    + "anyone else who clicks is refused.\nButtons, forms and `/approvals` reach the app as "
    + "signed Slack requests.", ctx({})));
  const panels = (state.panels || []).map((panel) => {
    const node = el("div", "panel");
    node.append(el("h4", null, panel.title));
    const list = el("ol", "panel-lines");
    for (const line of panel.lines) list.append(el("li", null, line));
    if (!panel.lines.length) list.append(el("li", "empty-detail", "nothing yet"));
    node.append(list);
    return node;
  });
  side.replaceChildren(help, ...panels);
}

// -- modals ----------------------------------------------------------------------------------

function renderModal() {
  const layer = $("layer");
  const top = state.modals[state.modals.length - 1];
  const key = top ? `${top.id}:${top.hash}` : null;
  if (key === modal.key) return;
  layer.querySelectorAll(".modal-backdrop").forEach((node) => node.remove());
  modal.key = key;
  modal.errors = {};
  modal.form = new Map();
  if (!top) return;
  const backdrop = el("div", "backdrop modal-backdrop");
  const dialog = el("div", "dialog modal");
  dialog.setAttribute("role", "dialog");
  dialog.dataset.viewId = top.id;
  const header = el("div", "modal-header");
  header.append(el("h2", "dialog-title", top.title ? top.title.text : ""));
  const x = el("button", "link-button modal-x", "×");
  x.type = "button";
  x.setAttribute("aria-label", "Close");
  x.addEventListener("click", () => closeModal(top));
  header.append(x);
  const banner = el("div", "modal-banner");
  banner.hidden = true;
  const body = el("div", "modal-body");
  body.append(renderBlocks(top.blocks, ctx({
    form: modal.form,
    onAction: (spec, blockId, value, node) => act("view/click", {
      view_id: top.id, action_id: spec.action_id, block_id: blockId, value }, node),
  })));
  const footer = el("div", "dialog-footer");
  const close = el("button", "btn", top.close ? top.close.text : "Close");
  close.type = "button";
  close.addEventListener("click", () => closeModal(top));
  footer.append(close);
  if (top.submit) {
    const submit = el("button", "btn btn-primary", top.submit.text);
    submit.type = "button";
    submit.addEventListener("click", () => submitModal(top, banner, submit));
    footer.append(submit);
  }
  dialog.append(header, banner, body, footer);
  backdrop.append(dialog);
  layer.append(backdrop);
}

function showErrors(errors) {
  for (const [blockId, field] of modal.form) field.showError(errors[blockId] || "");
}

async function submitModal(view, banner, button) {
  const values = {};
  const missing = {};
  for (const [blockId, field] of modal.form) {
    const value = field.get();
    const empty = value === null || value === "" || (Array.isArray(value) && !value.length);
    if (field.required && empty) missing[blockId] = REQUIRED;
    values[blockId] = value;
  }
  // Slack's client refuses to send a form with a required field left empty.
  showErrors(missing);
  if (Object.keys(missing).length) return;
  button.disabled = true;
  banner.hidden = true;
  const answer = await api("view/submit", { user: ui.user, view_id: view.id, values });
  button.disabled = false;
  const body = answer.body || {};
  if (body.response_action === "errors") {
    showErrors(body.errors || {});
  } else if (answer.error || answer.status < 200 || answer.status >= 300) {
    banner.textContent = answer.error || `We had some trouble connecting (the app answered HTTP ${answer.status}).`;
    banner.hidden = false;
  }
  await refresh(true);
}

async function closeModal(view) {
  const answer = await api("view/close", { user: ui.user, view_id: view.id });
  reportAnswer(answer, "view_closed");
  await refresh(true);
}

// -- acting ----------------------------------------------------------------------------------

async function act(path, body, node) {
  if (node) { node.disabled = true; node.classList.add("busy"); }
  const answer = await api(path, { user: ui.user, ...body });
  if (node) { node.disabled = false; node.classList.remove("busy"); }
  reportAnswer(answer, body.action_id || path);
  await refresh(true);
}

async function sendComposer(event) {
  event.preventDefault();
  const input = $("composer-input");
  const text = input.value.trim();
  if (!text) return;
  if (!state) await refresh(true); // typed before the page had loaded the workspace
  if (!state) { toast("The sandbox is not answering; try again in a moment."); return; }
  const dm = state.conversations.find((c) => c.is_im);
  const channel = ui.app ? (dm ? dm.id : ui.user) : ui.conversation;
  const note = (line) => notices.push({ channel: ui.app ? "app" : channel, user: ui.user,
    ts: (Date.now() / 1000).toFixed(6), text: line, local: true });
  input.value = "";
  if (!text.startsWith("/")) {
    note("The sandbox sends slash commands only: try `/approvals`.");
    render();
    return;
  }
  const [command, ...rest] = text.split(/\s+/);
  const answer = await api("command", { user: ui.user, channel, command, text: rest.join(" ") });
  if (answer.error) note(`${command} failed: ${answer.error}`);
  else if (answer.status < 200 || answer.status >= 300) {
    note(`${command} failed with the error "dispatch_failed" (the app answered HTTP ${answer.status}).`);
  } else if (!answer.body && !(answer.text || "").trim()) {
    note(`The app acknowledged \`${command}\` without a reply.`);
  }
  await refresh(true);
  render();
}

function start() {
  $("switcher").addEventListener("change", (event) => {
    ui.user = event.target.value;
    localStorage.setItem("sandbox.user", ui.user);
    ui.thread = null;
    ui.homeAnswer = null;
    modal.key = undefined; // whatever the next person has open is drawn afresh
    refresh(true).then(() => ui.app === "home" && openApp("home"));
  });
  $("composer").addEventListener("submit", sendComposer);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || !state) return;
    const confirm = document.querySelector(".confirm-backdrop");
    if (confirm) { confirm.querySelector(".dialog-footer .btn").click(); return; } // "Go back"
    const top = state.modals[state.modals.length - 1];
    if (top) closeModal(top);
  });
  document.addEventListener("click", (event) => {
    for (const menu of document.querySelectorAll(".overflow-menu:not([hidden])")) {
      if (!menu.parentElement.contains(event.target)) menu.hidden = true;
    }
  });
  refresh(true).then(schedule);
}

start();
