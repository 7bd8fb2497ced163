// Slack mrkdwn to DOM nodes, as Slack's client shows it.
//
// Every piece of text becomes a text node (or an element's textContent): nothing the app
// or an event wrote is ever parsed as HTML. Links get an href only for http, https and
// mailto URLs. Mentions show as @name, dates in the viewing user's time zone.

const ENTITIES = { "&lt;": "<", "&gt;": ">", "&amp;": "&" };
const MARKS = { "*": "strong", "_": "em", "~": "s" };
const SAFE_URL = /^(https?:|mailto:)/i;

export function unescapeEntities(text) {
  return String(text).replace(/&(lt|gt|amp);/g, (entity) => ENTITIES[entity]);
}

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// A mrkdwn string as a fragment: code blocks, quotes, lines, then inline formatting.
export function renderMrkdwn(text, ctx) {
  const out = document.createDocumentFragment();
  const source = String(text ?? "");
  const fence = /```([\s\S]*?)```/g;
  let last = 0;
  for (const match of source.matchAll(fence)) {
    renderLines(source.slice(last, match.index), ctx, out);
    const pre = el("pre", "code-block", unescapeEntities(match[1].replace(/^\n/, "").replace(/\n$/, "")));
    out.append(pre);
    last = match.index + match[0].length;
  }
  renderLines(source.slice(last), ctx, out);
  return out;
}

// Plain text objects show as written (Slack only turns :emoji: codes into pictures).
export function renderPlain(text) {
  return document.createTextNode(String(text ?? ""));
}

export function renderText(object, ctx) {
  if (!object) return document.createDocumentFragment();
  if (typeof object === "string") return renderMrkdwn(object, ctx);
  return object.type === "mrkdwn" ? renderMrkdwn(object.text, ctx) : renderPlain(object.text);
}

function renderLines(text, ctx, out) {
  if (!text) return;
  const lines = text.replace(/^\n|\n$/g, "").split("\n");
  if (text.trim() === "") return;
  let quote = null;
  lines.forEach((line, index) => {
    const quoted = line.match(/^(>|&gt;) ?(.*)$/);
    if (quoted) {
      if (!quote) {
        quote = el("blockquote");
        out.append(quote);
      } else {
        quote.append(el("br"));
      }
      quote.append(renderInline(quoted[2], ctx));
      return;
    }
    quote = null;
    out.append(renderInline(line, ctx));
    if (index < lines.length - 1 && !(lines[index + 1] || "").match(/^(>|&gt;)/)) {
      out.append(el("br"));
    }
  });
}

function boundary(char) {
  return char === undefined || !/[A-Za-z0-9]/.test(char);
}

function closingMark(text, start, mark) {
  for (let j = start + 2; j < text.length; j += 1) {
    if (text[j] === "<") {
      const end = text.indexOf(">", j);
      if (end > j) { j = end; continue; }
    }
    if (text[j] === "`") {
      const end = text.indexOf("`", j + 1);
      if (end > j) { j = end; continue; }
    }
    if (text[j] === mark && !/\s/.test(text[j - 1]) && boundary(text[j + 1])) return j;
  }
  return -1;
}

export function renderInline(text, ctx) {
  const out = document.createDocumentFragment();
  let buffer = "";
  const flush = () => {
    if (buffer) out.append(document.createTextNode(unescapeEntities(buffer)));
    buffer = "";
  };
  let i = 0;
  while (i < text.length) {
    const char = text[i];
    if (char === "`") {
      const end = text.indexOf("`", i + 1);
      if (end > i + 1) {
        flush();
        out.append(el("code", null, unescapeEntities(text.slice(i + 1, end))));
        i = end + 1;
        continue;
      }
    } else if (char === "<") {
      const end = text.indexOf(">", i + 1);
      if (end > i + 1) {
        flush();
        out.append(renderToken(text.slice(i + 1, end), ctx));
        i = end + 1;
        continue;
      }
    } else if (MARKS[char] && boundary(text[i - 1]) && text[i + 1] && !/\s/.test(text[i + 1])) {
      const end = closingMark(text, i, char);
      if (end > 0) {
        flush();
        const node = el(MARKS[char]);
        node.append(renderInline(text.slice(i + 1, end), ctx));
        out.append(node);
        i = end + 1;
        continue;
      }
    }
    buffer += char;
    i += 1;
  }
  flush();
  return out;
}

// <@U…>, <#C…>, <!subteam^S…>, <!date^…>, <!here>, <url|label>.
function renderToken(token, ctx) {
  const bar = token.indexOf("|");
  const target = bar >= 0 ? token.slice(0, bar) : token;
  const label = bar >= 0 ? token.slice(bar + 1) : "";
  if (target.startsWith("@U") || target.startsWith("@W")) {
    const user = (ctx.users || []).find((u) => u.id === target.slice(1));
    const name = user ? user.display_name : (label || target.slice(1));
    const mention = el("span", "mention", `@${name}`);
    if (ctx.me && user && user.id === ctx.me.id) mention.classList.add("mention-me");
    return mention;
  }
  if (target.startsWith("#C") || target.startsWith("#G") || target.startsWith("#D")) {
    const name = (ctx.channels || {})[target.slice(1)] || label || target.slice(1);
    return el("span", "mention", `#${unescapeEntities(name)}`);
  }
  if (target.startsWith("!subteam^")) {
    const id = target.slice("!subteam^".length);
    const handle = (ctx.groups || {})[id] || label.replace(/^@/, "") || id;
    return el("span", "mention", `@${handle}`);
  }
  if (target.startsWith("!date^")) return renderDate(target, label, ctx);
  if (["!here", "!channel", "!everyone"].includes(target)) {
    return el("span", "mention mention-broadcast", `@${target.slice(1)}`);
  }
  const url = unescapeEntities(target);
  const text = unescapeEntities(label || target);
  if (!SAFE_URL.test(url)) return document.createTextNode(text);
  const link = el("a", null, text);
  link.href = url;
  link.target = "_blank";
  link.rel = "noopener noreferrer";
  return link;
}

function renderDate(target, fallback, ctx) {
  const [, seconds, format, link] = target.split("^");
  const when = new Date(Number(seconds) * 1000);
  const span = el("time", "date");
  if (Number.isNaN(when.getTime())) {
    span.textContent = unescapeEntities(fallback);
    return span;
  }
  span.textContent = formatDate(when, format || "{date_num} {time}", ctx.me ? ctx.me.tz : undefined);
  span.dateTime = when.toISOString();
  span.title = `${unescapeEntities(fallback)}${ctx.me ? ` · shown in ${ctx.me.tz}` : ""}`;
  if (link && SAFE_URL.test(link)) {
    const anchor = el("a");
    anchor.href = link;
    anchor.target = "_blank";
    anchor.rel = "noopener noreferrer";
    anchor.append(span);
    return anchor;
  }
  return span;
}

function parts(when, timeZone, options) {
  try {
    return new Intl.DateTimeFormat("en-US", { timeZone, ...options }).format(when);
  } catch (error) {
    return new Intl.DateTimeFormat("en-US", options).format(when);
  }
}

function ordinal(day) {
  const n = Number(day);
  const suffix = n % 10 === 1 && n !== 11 ? "st" : n % 10 === 2 && n !== 12 ? "nd"
    : n % 10 === 3 && n !== 13 ? "rd" : "th";
  return `${n}${suffix}`;
}

function dayKey(when, timeZone) {
  return parts(when, timeZone, { year: "numeric", month: "2-digit", day: "2-digit" });
}

function pretty(when, timeZone, otherwise) {
  const day = 86400000;
  const now = Date.now();
  const key = dayKey(when, timeZone);
  if (key === dayKey(new Date(now), timeZone)) return "today";
  if (key === dayKey(new Date(now - day), timeZone)) return "yesterday";
  if (key === dayKey(new Date(now + day), timeZone)) return "tomorrow";
  return otherwise;
}

function ago(when) {
  const seconds = Math.round((when.getTime() - Date.now()) / 1000);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60], ["second", 1]];
  const [unit, size] = units.find(([, s]) => Math.abs(seconds) >= s) || units[3];
  return new Intl.RelativeTimeFormat("en", { numeric: "auto" }).format(Math.round(seconds / size), unit);
}

// Slack's {date_num}, {date}, {date_short}, {date_long}, their _pretty forms, {time}, {time_secs}, {ago}.
export function formatDate(when, format, timeZone) {
  const month = parts(when, timeZone, { month: "long" });
  const shortMonth = parts(when, timeZone, { month: "short" });
  const day = parts(when, timeZone, { day: "numeric" });
  const year = parts(when, timeZone, { year: "numeric" });
  const weekday = parts(when, timeZone, { weekday: "long" });
  const dateText = `${month} ${ordinal(day)}, ${year}`;
  const shortText = `${shortMonth} ${day}, ${year}`;
  const longText = `${weekday}, ${dateText}`;
  const tokens = {
    date_num: parts(when, timeZone, { year: "numeric", month: "2-digit", day: "2-digit" })
      .replace(/(\d+)\/(\d+)\/(\d+)/, "$3-$1-$2"),
    date: dateText,
    date_short: shortText,
    date_long: longText,
    date_pretty: pretty(when, timeZone, dateText),
    date_short_pretty: pretty(when, timeZone, shortText),
    date_long_pretty: pretty(when, timeZone, longText),
    time: parts(when, timeZone, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" }),
    time_secs: parts(when, timeZone, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" }),
    ago: ago(when),
  };
  return format.replace(/\{(\w+)\}/g, (whole, name) => (name in tokens ? tokens[name] : whole));
}

// "14:02" for a message's ts, in the viewer's time zone.
export function clock(ts, timeZone) {
  return parts(new Date(Number(ts) * 1000), timeZone, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}
