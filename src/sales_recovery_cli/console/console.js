/* The recovery console: the help article's screens over the REST API of DESIGN §3 (no framework, no build step).
 * Routes live in the URL fragment: #/c/<connection>/errors, #/c/<connection>/reprocess, #/c/<connection>/sale/<id>,
 * #/c/<connection>/pack/<pack id> (a cart, reprocessed whole).
 * Every screen keeps its data in `model` and is drawn from it, so switching language redraws without losing work. */
"use strict";
(() => {
  const TERMINAL = ["reflected", "already_reflected", "not_reflectable", "escalated"];
  const GOOD = ["reflected", "already_reflected"];
  const PAGE_SIZE = 20;
  const ASK_AUTOMATICALLY = 100; // numeric ids looked up in ML without a click (a read-only verification each)
  const POLL_MS = 700;

  const texts = {};
  const model = {
    lang: "en", config: { connections: [] }, connection: null, connectionView: null, screen: "errors",
    errors: { type: "", cursors: [null], index: 0, page: null, failure: null, outcomes: {} },
    reprocess: { text: "", kinds: {}, asking: null, job: null, view: null, items: null, failure: null },
    sale: { id: "", report: null, state: null, failure: null, busy: null, result: null },
    pack: { id: "", report: null, state: null, busy: null, result: null },
  };
  const SCREENS = ["errors", "reprocess", "sale", "pack"];

  // --- small helpers ------------------------------------------------------------------------------------------------
  const $ = (selector, root = document) => root.querySelector(selector);

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function lookup(lang, key) {
    return key.split(".").reduce((node, part) => (node && typeof node === "object" ? node[part] : undefined), texts[lang]);
  }

  function t(key, vars) {
    let text = lookup(model.lang, key);
    if (typeof text !== "string") text = lookup("en", key);
    if (typeof text !== "string") return key.split(".").pop();
    return text.replace(/\{(\w+)\}/g, (_, name) => (vars && name in vars ? String(vars[name]) : `{${name}}`));
  }

  const has = (key) => typeof lookup("en", key) === "string";
  const reasonText = (reason) => (reason ? (has(`reason.${reason}`) ? t(`reason.${reason}`) : reason) : "");
  const actionText = (reason, fallback) => (reason && has(`action.${reason}`) ? t(`action.${reason}`) : fallback || "");

  // The API's free text is English. Where an answer carries a stable code the page says it in the reader's language
  // from the catalogue, and keeps the API's own words beside it (they name ids and what ML said); a code the page does
  // not know shows the API's text alone.
  const apiWords = (text) => (text ? h("span", { class: "detail", lang: "en" }, text) : null);
  function coded(group, code, text, vars) {
    if (!code || !has(`${group}.${code}`)) return [h("span", { lang: "en" }, text || code || "")];
    return [h("span", { class: "said", "data-code": code }, t(`${group}.${code}`, vars)), apiWords(text)];
  }

  function when(value) {
    if (!value) return "";
    const date = new Date(value);
    if (Number.isNaN(date.getTime())) return String(value);
    return new Intl.DateTimeFormat(model.lang, { dateStyle: "short", timeStyle: "medium" }).format(date);
  }

  function announce(text) {
    const live = $("#announcer");
    live.textContent = "";
    window.setTimeout(() => { live.textContent = text; }, 30);
  }

  function outcomeBadge(outcome) {
    const tone = GOOD.includes(outcome) ? "good" : TERMINAL.includes(outcome) ? "bad" : "wait";
    return h("span", { class: `badge ${tone}`, "data-outcome": outcome }, t(`outcome.${outcome}`));
  }

  function notice(text, tone, role) {
    return h("p", { class: `notice ${tone || ""}`, role: role || null }, text);
  }

  function tableIn(label, table) {
    // A region that scrolls sideways on a phone; focusable so a keyboard can scroll it.
    return h("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: "0" }, table);
  }

  const sleep = (ms) => new Promise((resolve) => window.setTimeout(resolve, ms));
  const enc = encodeURIComponent;
  const connectionPath = () => `/connections/${enc(model.connection)}`;

  // One call at a time from a page: it never competes with itself for the seller's Mercado Libre quota (a job's
  // polling, a resync click and the pre-check's look-ups take turns), and answers arrive in the order asked.
  let queue = Promise.resolve();
  function api(method, path, body, extra) {
    const call = queue.then(() => send(method, path, body, extra));
    queue = call.catch(() => undefined);
    return call;
  }

  async function send(method, path, body, extra) {
    const headers = { Accept: "application/json", ...(extra || {}) };
    if (model.config.token) headers["X-Console-Token"] = model.config.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (error) {
      return { status: 0, body: { error: "network", message: String(error) } };
    }
    let parsed = null;
    try { parsed = await response.json(); } catch (error) { parsed = { message: response.statusText }; }
    return { status: response.status, body: parsed };
  }

  // A failed call, kept as the API answered it (status, error code, message) so a language switch says it again.
  function failureOf(answer) {
    const body = answer.body && typeof answer.body === "object" ? answer.body : {};
    return { status: answer.status, code: typeof body.error === "string" ? body.error : "", message: body.message || "", body };
  }

  const failureKnown = (failure) => Boolean(failure.code && has(`api_error.${failure.code}`));
  const failureText = (failure) =>
    `${t("ui.error")} ${failure.status || ""}: ${failureKnown(failure) ? t(`api_error.${failure.code}`) : failure.message}`;

  function failureView(failure, extra) {
    return h("div", { class: "notice bad", role: "alert", "data-error": failure.code || null },
      h("p", {}, failureText(failure)),
      failureKnown(failure) && failure.message ? h("p", { class: "detail", lang: "en" }, failure.message) : null,
      extra || null);
  }

  function saleLinks(ids) {
    return ids.flatMap((saleId, i) => [i ? ", " : "", h("a", { href: `#/c/${enc(model.connection)}/sale/${enc(saleId)}` }, saleId)]);
  }

  // --- ids: the same rules as shared/identifiers.parse_identifier, so the pre-check agrees with the API ------------
  const MAX_ID = 9223372036854775807n;
  const TRACKING = /^[A-Z0-9][A-Z0-9-]{5,38}[A-Z0-9]$/;
  const LISTING = /^[A-Z]{3}U?\d{6,14}$/;
  const SEPARATORS = /[,;\s]+/;

  function classify(value) {
    const text = value.trim();
    if (!text) return { kind: "junk", why: "empty" };
    const ascii = /^[\x00-\x7f]*$/.test(text);
    if (ascii && /^\d+$/.test(text)) {
      if (text.length > 19 || BigInt(text) > MAX_ID) return { kind: "junk", why: "too_long" };
      if (text.startsWith("0")) return { kind: "junk", why: "leading_zero" };
      return { kind: "sale" };
    }
    if (ascii && /^-\d+$/.test(text)) return { kind: "junk", why: "negative" };
    const upper = text.toUpperCase();
    if (ascii && LISTING.test(upper)) return { kind: "unknown", why: "listing" };
    if (ascii && TRACKING.test(upper) && /\d/.test(upper)) return { kind: "tracking" };
    return { kind: "junk", why: "other" };
  }

  function precheck(text) {
    const entries = text.split(SEPARATORS).filter(Boolean);
    const seen = new Set();
    const numeric = [];
    const notSale = [];
    let duplicates = 0;
    for (const entry of entries) {
      const found = classify(entry);
      if (found.kind !== "sale") { notSale.push({ value: entry, ...found }); continue; }
      if (seen.has(entry)) { duplicates += 1; continue; }
      seen.add(entry);
      numeric.push(entry);
    }
    // What ML said about numeric ids: packs, shipments and unknown ids are not sale ids either.
    for (const id of numeric) {
      const known = model.reprocess.kinds[id];
      if (known && known.kind !== "sale") notSale.push({ value: id, ...known });
    }
    const saleIds = numeric.filter((id) => !(model.reprocess.kinds[id] && model.reprocess.kinds[id].kind !== "sale"));
    return { entries, numeric, saleIds, duplicates, notSale };
  }

  window.consoleIds = { classify, precheck }; // for the browser test that holds these rules to the API's

  // --- frame: connection, language, navigation ----------------------------------------------------------------------
  function applyStaticTexts() {
    document.documentElement.lang = model.lang;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    for (const button of document.querySelectorAll(".lang-button")) {
      button.setAttribute("aria-pressed", String(button.dataset.lang === model.lang));
    }
    const mode = model.config.mode === "forwarder" ? t("ui.forwarded_to", { url: model.config.api_url }) : t("ui.local_stack");
    $("#mode").textContent = mode;
  }

  function setLanguage(lang) {
    model.lang = lang;
    try { window.localStorage.setItem("console.lang", lang); } catch (error) { /* private mode: not remembered */ }
    applyStaticTexts();
    drawConnection();
    drawScreen();
    announce(lang === "es" ? "Idioma: español" : "Language: English");
  }

  function parseRoute() {
    const parts = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] !== "c" || !parts[1]) return { connection: null, screen: "errors", id: "" };
    return { connection: parts[1], screen: parts[2] || "errors", id: parts[3] || "" };
  }

  function routeTo(screen, id) {
    const tail = (screen === "sale" || screen === "pack") && id ? `/${enc(id)}` : "";
    window.location.hash = `#/c/${enc(model.connection)}/${screen}${tail}`;
  }

  async function onRoute() {
    const route = parseRoute();
    const changed = route.connection !== model.connection;
    model.connection = route.connection;
    model.screen = SCREENS.includes(route.screen) ? route.screen : "errors";
    if (changed || (model.screen !== "pack" && route.id !== model.sale.id)) {
      model.sale = { id: model.screen === "pack" ? "" : route.id, report: null, state: null, failure: null, busy: null, result: null };
    }
    if (changed || (model.screen === "pack" && route.id !== model.pack.id)) {
      model.pack = { id: model.screen === "pack" ? route.id : "", report: null, state: null, busy: null, result: null };
    }
    if (changed) {
      model.errors = { type: "", cursors: [null], index: 0, page: null, failure: null, outcomes: {} };
      model.reprocess = { text: "", kinds: {}, asking: null, job: null, view: null, items: null, failure: null };
      model.connectionView = null;
      $("#connection-input").value = model.connection || "";
      if (model.connection) {
        try { window.localStorage.setItem("console.connection", model.connection); } catch (error) { /* ignore */ }
      }
    }
    drawNav();
    drawScreen();
    $("#main").focus();
    if (changed && model.connection) await loadConnection();
    if (model.connection && model.screen === "errors" && !model.errors.page) await loadErrors();
    if (model.connection && model.screen === "sale" && model.sale.id && !model.sale.report) await loadSale();
    if (model.connection && model.screen === "pack" && model.pack.id && !model.pack.state) await loadPack();
    const job = model.reprocess.job;
    if (model.connection && model.screen === "reprocess" && route.id && !(job && job.job_id === route.id)) await openJob(route.id);
  }

  function drawNav() {
    for (const link of document.querySelectorAll(".tabs a")) {
      const screen = link.dataset.screen;
      const id = screen === "sale" ? model.sale.id : screen === "pack" ? model.pack.id : "";
      link.href = model.connection ? `#/c/${enc(model.connection)}/${screen}${id ? `/${enc(id)}` : ""}` : "#";
      if (screen === model.screen && model.connection) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  async function loadConnection() {
    const connection = model.connection;
    const answer = await api("GET", connectionPath());
    if (connection !== model.connection) return;
    model.connectionView = answer;
    drawConnection();
  }

  function drawConnection() {
    const box = $("#connection-state");
    box.replaceChildren();
    const answer = model.connectionView;
    if (!model.connection || !answer) return;
    if (answer.status !== 200) { box.append(failureView(failureOf(answer))); return; }
    const view = answer.body;
    const ok = view.state === "active";
    const rows = [
      [t("ui.connection"), view.connection_id],
      [t("ui.state"), h("span", { class: `badge ${ok ? "good" : "bad"}`, id: "connection-badge", "data-state": view.state }, t(`state.${view.state}`))],
      [t("ui.seller"), String(view.seller_id)],
      [t("ui.site"), view.site_id],
    ];
    if (!ok) {
      rows.push([t("ui.cause"), coded("cause", view.cause, view.detail ? `${view.cause}: ${view.detail}` : view.cause)], [t("ui.since"), when(view.since)]);
      rows.push([t("ui.what_to_do"), actionText(view.reason, view.seller_action)]);
    }
    box.append(h("dl", {}, rows.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))));
  }

  function drawScreen() {
    const main = $("#main");
    main.replaceChildren();
    if (!model.connection) {
      main.append(h("h2", {}, t("ui.title")), h("p", {}, t("ui.pick_connection")));
      return;
    }
    ({ errors: drawErrors, reprocess: drawReprocess, sale: drawSale, pack: drawPack })[model.screen](main);
  }

  // --- screen: sales with errors -----------------------------------------------------------------------------------
  async function loadErrors() {
    const state = model.errors;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.type) params.set("error_type", state.type);
    if (state.cursors[state.index]) params.set("cursor", state.cursors[state.index]);
    state.page = null;
    state.failure = null;
    drawScreen();
    const answer = await api("GET", `${connectionPath()}/sale-errors?${params}`);
    if (answer.status === 200) {
      state.page = answer.body;
      state.cursors = state.cursors.slice(0, state.index + 1);
      if (answer.body.next_cursor) state.cursors.push(answer.body.next_cursor);
    } else {
      state.failure = failureOf(answer);
    }
    if (model.screen === "errors") drawScreen();
  }

  function drawErrors(main) {
    const state = model.errors;
    main.append(h("h2", {}, t("ui.nav_errors")));
    const select = h("select", { id: "error-type", name: "error_type" },
      h("option", { value: "" }, t("ui.all_types")),
      Object.keys(texts.en.error_type).map((type) => h("option", { value: type, selected: type === state.type }, t(`error_type.${type}`))));
    main.append(h("form", {
      class: "row", id: "errors-filter",
      onsubmit: (event) => {
        event.preventDefault();
        state.type = select.value;
        state.cursors = [null];
        state.index = 0;
        loadErrors();
      },
    }, h("label", { for: "error-type" }, t("ui.error_type")), select, h("button", { type: "submit" }, t("ui.filter"))));

    if (state.failure) { main.append(failureView(state.failure)); return; }
    if (!state.page) { main.append(h("p", { "aria-busy": "true" }, t("ui.loading"))); return; }
    if (!state.page.items.length) { main.append(notice(t("ui.errors_empty"))); }
    else {
      const caption = t("ui.errors_caption", { connection: model.connection });
      const head = h("tr", {}, [t("ui.sale_id"), t("ui.error_type"), t("ui.message"), t("ui.attempts"), t("ui.next_retry"), t("ui.actions"), t("ui.outcome")]
        .map((name) => h("th", { scope: "col" }, name)));
      const rows = state.page.items.map((entry) => errorRow(entry));
      main.append(tableIn(caption, h("table", { id: "errors-table" }, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, rows))));
    }
    const pager = h("div", { class: "buttons" },
      h("button", { type: "button", class: "secondary", id: "first-page", disabled: state.index === 0,
        onclick: () => { state.index = 0; loadErrors(); } }, t("ui.first_page")),
      h("span", { "aria-live": "polite" }, t("ui.page_n", { n: state.index + 1 })),
      h("button", { type: "button", class: "secondary", id: "next-page", disabled: state.cursors.length <= state.index + 1,
        onclick: () => { state.index += 1; loadErrors(); } }, t("ui.next_page")));
    main.append(pager);
  }

  function errorRow(entry) {
    const retry = entry.retryable ? (entry.next_retry_at ? when(entry.next_retry_at) : "—") : t("ui.no_retry");
    const button = h("button", {
      type: "button", class: "resync", "data-sale": entry.sale_id, "aria-label": t("ui.resync_label", { id: entry.sale_id }),
      onclick: () => resyncListed(entry.sale_id),
    }, t("ui.resync"));
    // A failed cart is listed once, under its pack id: its row opens the cart.
    const href = entry.pack_id && entry.pack_id === entry.sale_id ? packHref(entry.pack_id) : `#/c/${enc(model.connection)}/sale/${enc(entry.sale_id)}`;
    return h("tr", { "data-sale": entry.sale_id },
      h("td", { class: "id" }, h("a", { href }, entry.sale_id)),
      h("td", {}, t(`error_type.${entry.error_type}`)),
      h("td", {}, coded("error_text", entry.error_type, entry.message), entry.escalated ? h("span", { class: "action" }, t("ui.escalated_mark")) : null),
      h("td", {}, String(entry.attempts || 0)),
      h("td", {}, retry),
      h("td", {}, button),
      h("td", { class: "outcome", "aria-live": "polite" }, outcomeCell(model.errors.outcomes[entry.sale_id])));
  }

  function outcomeCell(result) {
    if (!result) return null;
    if (result.busy) return t("ui.resyncing");
    if (result.failure) return h("span", { class: "action" }, failureText(result.failure), failureKnown(result.failure) ? [" ", apiWords(result.failure.message)] : null);
    return [outcomeBadge(result.outcome), result.reason ? ` ${reasonText(result.reason)}` : "",
      GOOD.includes(result.outcome) ? null : h("span", { class: "action" }, actionText(result.reason, result.seller_action))];
  }

  async function resyncListed(saleId) {
    const outcomes = model.errors.outcomes;
    outcomes[saleId] = { busy: true };
    redrawRow(saleId);
    const answer = await api("POST", `${connectionPath()}/sales/${enc(saleId)}/resync`);
    outcomes[saleId] = answer.status === 200 ? answer.body : { failure: failureOf(answer) };
    redrawRow(saleId);
    const result = outcomes[saleId];
    announce(result.outcome ? `${saleId}: ${t(`outcome.${result.outcome}`)}` : failureText(result.failure));
  }

  function redrawRow(saleId) {
    const cell = document.querySelector(`#errors-table tr[data-sale="${CSS.escape(saleId)}"] td.outcome`);
    if (cell) cell.replaceChildren(...[outcomeCell(model.errors.outcomes[saleId])].flat().filter(Boolean));
    const button = document.querySelector(`#errors-table button[data-sale="${CSS.escape(saleId)}"]`);
    if (button) button.disabled = Boolean(model.errors.outcomes[saleId] && model.errors.outcomes[saleId].busy);
  }

  // --- screen: reprocess sales ---------------------------------------------------------------------------------------
  let askTimer = null;

  function drawReprocess(main) {
    const state = model.reprocess;
    main.append(h("h2", {}, t("ui.nav_reprocess")));
    const box = h("textarea", { id: "ids", name: "sale_ids", "aria-describedby": "ids-hint", spellcheck: "false",
      oninput: (event) => {
        state.text = event.target.value;
        drawPrecheck();
        window.clearTimeout(askTimer);
        askTimer = window.setTimeout(() => askAutomatically(), 800);
      } });
    box.value = state.text;
    main.append(h("form", { id: "reprocess-form", onsubmit: (event) => { event.preventDefault(); submitJob(); } },
      h("label", { for: "ids" }, h("strong", {}, t("ui.ids_label"))),
      h("p", { class: "hint", id: "ids-hint" }, t("ui.ids_hint")),
      box,
      h("section", { id: "precheck", "aria-labelledby": "precheck-title" }),
      h("div", { class: "buttons" },
        h("button", { type: "submit", id: "submit-job", disabled: Boolean(state.job && !state.items) }, t("ui.submit")))));
    main.append(h("section", { id: "job", "aria-labelledby": "job-title" }));
    drawPrecheck();
    drawJob();
  }

  function drawPrecheck() {
    const section = $("#precheck");
    if (!section) return;
    const state = model.reprocess;
    const found = precheck(state.text);
    section.replaceChildren(h("h3", { id: "precheck-title" }, t("ui.precheck")));
    section.append(h("ul", { class: "summary", id: "precheck-summary", "aria-live": "polite" },
      h("li", { "data-count": "entries" }, t("ui.entries", { n: found.entries.length })),
      h("li", { "data-count": "sale_ids" }, t("ui.sale_ids_n", { n: found.saleIds.length })),
      h("li", { "data-count": "duplicates" }, t("ui.duplicates_n", { n: found.duplicates })),
      h("li", { "data-count": "not_sale" }, t("ui.not_sale_n", { n: found.notSale.length }))));
    const unasked = found.numeric.filter((id) => !state.kinds[id]);
    if (state.asking) section.append(h("p", { class: "hint", role: "status" }, t("ui.asking_ml", state.asking)));
    else if (unasked.length) {
      section.append(h("div", { class: "row" },
        h("button", { type: "button", class: "secondary", id: "ask-ml", onclick: () => askMarketplace(unasked) }, t("ui.ask_ml")),
        h("span", { class: "hint" }, t("ui.ask_ml_hint", { n: unasked.length }))));
    } else if (found.numeric.length) {
      section.append(h("p", { class: "hint", id: "asked-ml" }, t("ui.asked_ml", { n: found.numeric.length })));
    }
    if (!found.notSale.length) return;
    const head = h("tr", {}, [t("ui.entry"), t("ui.what_it_is"), ""].map((name) => h("th", { scope: "col" }, name || h("span", { class: "visually-hidden" }, t("ui.actions")))));
    const rows = found.notSale.map((item) => {
      const what = [h("span", { class: "kind", "data-kind": item.kind }, t(`kind.${item.kind}`))];
      if (item.why) what.push(` (${t(`junk.${item.why}`)})`);
      if (item.sale_ids && item.sale_ids.length) what.push(" ", t("ui.holds", { ids: item.sale_ids.join(", ") }));
      const use = item.sale_ids && item.sale_ids.length
        ? h("button", { type: "button", class: "secondary", onclick: () => replaceEntry(item.value, item.sale_ids) }, t("ui.use_sales"))
        : null;
      return h("tr", { "data-entry": item.value }, h("td", { class: "id" }, item.value), h("td", {}, what), h("td", {}, use));
    });
    const caption = t("ui.not_sale_caption");
    section.append(tableIn(caption, h("table", { id: "not-sale-table" }, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, rows))));
    section.append(h("button", { type: "button", class: "secondary", id: "remove-not-sales",
      onclick: () => removeEntries(new Set(found.notSale.map((item) => item.value))) }, t("ui.remove_not_sales")));
  }

  function setText(text) {
    model.reprocess.text = text;
    const box = $("#ids");
    if (box) box.value = text;
    drawPrecheck();
  }

  function replaceEntry(value, saleIds) {
    const entries = precheck(model.reprocess.text).entries;
    setText(entries.flatMap((entry) => (entry === value ? saleIds : [entry])).join("\n"));
  }

  function removeEntries(values) {
    setText(precheck(model.reprocess.text).entries.filter((entry) => !values.has(entry)).join("\n"));
  }

  function askAutomatically() {
    const unasked = precheck(model.reprocess.text).numeric.filter((id) => !model.reprocess.kinds[id]);
    if (unasked.length && unasked.length <= ASK_AUTOMATICALLY && !model.reprocess.asking) askMarketplace(unasked);
  }

  async function askMarketplace(ids) {
    // The verification route is read-only and says what ML knows the id as (sale, pack, shipment).
    const state = model.reprocess;
    const connection = model.connection;
    state.asking = { done: 0, n: ids.length };
    drawPrecheck();
    const queue = ids.slice();
    const worker = async () => {
      while (queue.length && connection === model.connection) {
        const id = queue.shift();
        const answer = await api("GET", `${connectionPath()}/sales/${enc(id)}/verification`);
        if (answer.status === 200) {
          const report = answer.body;
          const kind = report.identifier ? report.identifier.kind : "sale";
          if (kind !== "sale") state.kinds[id] = { kind, sale_ids: report.identifier.sale_ids || [] };
          else if (report.reason === "sale_not_found") state.kinds[id] = { kind: "not_found" };
          else state.kinds[id] = { kind: "sale" };
        }
        state.asking.done += 1;
        if (state.asking.done % 5 === 0) drawPrecheck();
      }
    };
    // One look-up at a time: each spends the seller's Mercado Libre quota, which running jobs share.
    await worker();
    state.asking = null;
    drawPrecheck();
    announce(t("ui.asked_ml", { n: ids.length }));
  }

  async function submitJob() {
    const state = model.reprocess;
    const entries = precheck(state.text).entries;
    if (!entries.length) { $("#ids").focus(); return; }
    state.job = null; state.view = null; state.items = null; state.failure = null;
    $("#submit-job").disabled = true;
    drawJob(t("ui.submitting"));
    // A submission whose answer was lost (network, 5xx) goes again with the same Idempotency-Key, and the API answers
    // the job it made instead of making a second one. Any answer ends the key: the same ids sent later are a new job.
    if (!state.pending || state.pending.text !== state.text) state.pending = { text: state.text, key: newKey() };
    const answer = await api("POST", `${connectionPath()}/reprocessing-jobs`, { sale_ids: entries }, { "Idempotency-Key": state.pending.key });
    if (answer.status !== 0 && answer.status < 500) state.pending = null;
    if (answer.status !== 202) {
      state.failure = failureOf(answer);
      const button = $("#submit-job");
      if (button) button.disabled = false;
      drawJob();
      return;
    }
    state.job = answer.body;
    window.history.replaceState(null, "", `#/c/${enc(model.connection)}/reprocess/${enc(state.job.job_id)}`);
    drawJob();
    await followJob(state.job.job_id);
  }

  async function openJob(jobId) {
    // A job's link (#/c/<connection>/reprocess/<job id>): its progress, or its outcomes once it is complete.
    const state = model.reprocess;
    state.job = { job_id: jobId, accepted: 0 };
    state.view = null; state.items = null; state.failure = null;
    const answer = await api("GET", `${connectionPath()}/reprocessing-jobs/${enc(jobId)}?limit=1`);
    if (answer.status !== 200) { state.job = null; state.failure = failureOf(answer); drawJob(); return; }
    state.job = answer.body;
    state.view = answer.body;
    drawJob();
    await followJob(jobId);
  }

  async function followJob(jobId) {
    const state = model.reprocess;
    const path = `${connectionPath()}/reprocessing-jobs/${enc(jobId)}`;
    for (;;) {
      const answer = await api("GET", `${path}?limit=1`);
      if (!state.job || state.job.job_id !== jobId) return;
      if (answer.status === 200) { state.view = answer.body; updateProgress(); }
      if (answer.status === 200 && answer.body.status === "completed") break;
      await sleep(POLL_MS);
    }
    const items = [];
    let cursor = null;
    do {
      const query = new URLSearchParams({ limit: "1000" });
      if (cursor) query.set("cursor", cursor);
      const answer = await api("GET", `${path}?${query}`);
      if (answer.status !== 200) { state.failure = failureOf(answer); break; }
      items.push(...answer.body.items);
      cursor = answer.body.next_cursor;
    } while (cursor);
    state.items = items;
    drawJob();
    const button = $("#submit-job");
    if (button) button.disabled = false;
    announce(t("ui.job_done"));
  }

  function newKey() {
    if (window.crypto.randomUUID) return `console-${window.crypto.randomUUID()}`;
    const bytes = window.crypto.getRandomValues(new Uint8Array(16));
    return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  function progressOf(view) {
    const total = view ? view.accepted : model.reprocess.job.accepted;
    const counts = (view && view.counts) || {};
    const done = TERMINAL.reduce((sum, outcome) => sum + (counts[outcome] || 0), 0);
    const pct = total ? Math.floor((100 * done) / total) : 100;
    return { total, done, pct };
  }

  function updateProgress() {
    const bar = $("#job-progress");
    if (!bar) return;
    const { total, done, pct } = progressOf(model.reprocess.view);
    bar.max = Math.max(total, 1);
    bar.value = total ? done : 1;
    bar.setAttribute("aria-valuetext", t("ui.progress_text", { done, total, pct }));
    $("#job-progress-text").textContent = t("ui.progress_text", { done, total, pct });
  }

  function drawJob(busyText) {
    const section = $("#job");
    if (!section) return;
    const state = model.reprocess;
    section.replaceChildren();
    if (busyText) { section.append(h("p", { role: "status" }, busyText)); return; }
    if (state.failure) section.append(failureView(state.failure));
    if (!state.job) return;
    const job = state.job;
    section.append(h("h3", { id: "job-title" }, t("ui.job", { id: job.job_id })),
      h("p", {}, t("ui.job_accepted", { accepted: job.accepted, messages: job.messages, rejected: job.rejected_count, duplicates: job.duplicates })),
      h("label", { for: "job-progress" }, t("ui.progress")),
      h("progress", { id: "job-progress", max: "1", value: "0" }),
      h("p", { id: "job-progress-text", "aria-live": "polite" }),
      h("p", {}, h("a", { id: "job-link", href: `#/c/${enc(model.connection)}/reprocess/${enc(job.job_id)}` }, t("ui.job_link"))));
    updateProgress();
    if (job.rejected && job.rejected.length) {
      const caption = t("ui.rejected_caption");
      const head = h("tr", {}, [t("ui.entry"), t("ui.reason"), t("ui.message")].map((name) => h("th", { scope: "col" }, name)));
      const rows = job.rejected.map((item) => h("tr", {},
        h("td", { class: "id" }, item.sale_id),
        h("td", {}, reasonText(item.reason), item.identifier_kind ? ` (${t(`kind.${item.identifier_kind}`)})` : ""),
        h("td", {}, coded("rejected", item.reason, item.message, { kind: item.identifier_kind ? t(`kind.${item.identifier_kind}`) : "" }))));
      section.append(tableIn(caption, h("table", { id: "rejected-table" }, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, rows))));
    }
    if (!state.items) return;
    section.append(notice(t("ui.job_done"), "good"));
    const caption = t("ui.outcomes_caption");
    const head = h("tr", {}, [t("ui.sale_id"), t("ui.outcome"), t("ui.reason"), t("ui.attempts"), t("ui.what_to_do")].map((name) => h("th", { scope: "col" }, name)));
    // What needs a person first: escalated, then blocked, then the rest, each in the job's order.
    const rank = (item) => ["escalated", "not_reflectable"].indexOf(item.outcome) >>> 0;
    const ordered = state.items.map((item, i) => [rank(item), i, item]).sort((x, y) => x[0] - y[0] || x[1] - y[1]).map((x) => x[2]);
    const rows = ordered.map((item) => h("tr", { "data-sale": item.sale_id },
      h("td", { class: "id" }, h("a", { href: `#/c/${enc(model.connection)}/sale/${enc(item.sale_id)}` }, item.sale_id)),
      h("td", {}, outcomeBadge(item.outcome)),
      h("td", { "data-reason": item.reason || "" }, reasonText(item.reason)),
      h("td", {}, String(item.attempts || 0)),
      h("td", {}, GOOD.includes(item.outcome) ? "" : actionText(item.reason, item.detail))));
    section.append(tableIn(caption, h("table", { id: "outcomes-table" }, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, rows))));
    const csv = new Blob([jobCsv(state.items, job.rejected || [])], { type: "text/csv;charset=utf-8" });
    section.append(h("p", {}, h("a", { id: "download-csv", href: URL.createObjectURL(csv), download: `job-${job.job_id}.csv` }, t("ui.download_csv"))));
  }

  function csvField(value) {
    let text = value === null || value === undefined ? "" : String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`; // a spreadsheet must not run a pasted value as a formula
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  }

  function jobCsv(items, rejected) {
    const lines = [["sale_id", "outcome", "reason", "attempts", "seller_action"]];
    for (const item of items) {
      lines.push([item.sale_id, item.outcome, item.reason || "", item.attempts || 0,
        GOOD.includes(item.outcome) ? "" : actionText(item.reason, item.detail)]);
    }
    for (const item of rejected) lines.push([item.sale_id, "rejected", item.reason, 0, item.message]);
    return lines.map((line) => line.map(csvField).join(",")).join("\r\n") + "\r\n";
  }

  // --- screen: one sale ---------------------------------------------------------------------------------------------
  async function loadSale() {
    const sale = model.sale;
    const id = sale.id;
    const report = await api("GET", `${connectionPath()}/sales/${enc(id)}/verification`);
    const state = await api("GET", `${connectionPath()}/sales/${enc(id)}`);
    if (model.sale.id !== id) return;
    sale.report = report;
    sale.state = state;
    if (model.screen === "sale") drawScreen();
    // The verification may be what found the connection refused: show its new state at once.
    const refused = report.status === 200 && report.body.reason === "connection_needs_reauthorization";
    if (refused && model.connectionView && model.connectionView.body.state === "active") await loadConnection();
  }

  function drawSale(main) {
    const sale = model.sale;
    const input = h("input", { id: "sale-input", name: "sale_id", inputmode: "numeric", spellcheck: "false", required: true });
    input.value = sale.id;
    main.append(h("h2", {}, t("ui.nav_sale")),
      h("form", { class: "row", id: "sale-form", onsubmit: (event) => { event.preventDefault(); if (input.value.trim()) routeTo("sale", input.value.trim()); } },
        h("label", { for: "sale-input" }, t("ui.sale_label")), input, h("button", { type: "submit" }, t("ui.open_sale"))));
    if (!sale.id) return;
    if (!sale.report) { main.append(h("p", { "aria-busy": "true" }, t("ui.loading"))); return; }
    const report = sale.report.status === 200 ? sale.report.body : null;
    const state = sale.state && sale.state.status === 200 ? sale.state.body : null;
    main.append(h("h3", { id: "sale-title" }, `${t("ui.sale_id")} ${sale.id}`));
    if (!report) main.append(failureView(failureOf(sale.report)));
    // A sale of a cart answers the cart's outcome: the cart is where it is seen whole and relinked whole.
    const packId = (state && state.pack_id) || (report && report.cart && report.pack_id);
    if (packId && packId !== sale.id) main.append(h("p", { class: "notice", id: "cart-link" }, linkedText("ui.in_cart", { pack: h("a", { href: packHref(packId) }, packId) })));
    if (report) {
      main.append(h("p", { id: "next-action", "data-next": report.next_action }, h("strong", {}, `${t("ui.next_action")}: `), t(`next.${report.next_action}`)));
      if (report.identifier && report.identifier.kind !== "sale") {
        // Not a sale id: say what it is and link the sales it holds, each one click away (and a cart's pack, its cart).
        const ids = report.identifier.sale_ids || [];
        const cart = report.identifier.kind === "pack" && report.cart;
        main.append(h("p", { class: "notice bad", id: "identifier", "data-kind": report.identifier.kind },
          t(`kind.${report.identifier.kind}`), ids.length ? [" — ", linkedText("ui.holds", { ids: saleLinks(ids) })] : null,
          cart ? [" — ", h("a", { id: "open-cart", href: packHref(sale.id) }, t("ui.open_cart"))] : null));
      }
      main.append(...checksList(report));
      if (report.lines && report.lines.length) main.append(linesTable(report.lines));
    }
    const listed = Boolean((report && report.in_error_list) || (state && state.error_entry));
    main.append(h("div", { class: "buttons" },
      h("button", { type: "button", id: "relink", disabled: Boolean(sale.busy), onclick: relinkSale }, t("ui.relink")),
      h("button", { type: "button", id: "resync", class: "secondary", disabled: Boolean(sale.busy) || !listed,
        "aria-describedby": listed ? null : "resync-why", onclick: resyncSale }, t("ui.resync")),
      listed ? null : h("span", { class: "hint", id: "resync-why" }, t("ui.resync_needs_list"))));
    const result = h("div", { id: "sale-result", "aria-live": "polite" });
    if (sale.busy) result.append(h("p", {}, sale.busy));
    else if (sale.result) result.append(resultView(sale.result));
    main.append(result);
    main.append(h("h3", {}, t("ui.history")));
    const entry = (state && state.error_entry) || (report && report.error_entry);
    if (!state && sale.state && sale.state.status === 404) main.append(h("p", {}, t("ui.never_seen")));
    if (state) main.append(h("p", {}, outcomeBadge(state.outcome), state.reason ? ` ${reasonText(state.reason)}` : "", ` · ${t("ui.attempts")}: ${state.attempts || 0}`));
    drawRecord(main, state, entry, "");
  }

  // A text of the catalogue with nodes (links) in its {placeholders}: the words stay translatable around them.
  function linkedText(key, nodes) {
    const marks = Object.fromEntries(Object.keys(nodes).map((name, i) => [name, `\u0000${i}\u0000`]));
    return t(key, marks).split("\u0000").map((part, i) => (i % 2 ? nodes[Object.keys(nodes)[Number(part)]] : part));
  }

  const packHref = (packId) => `#/c/${enc(model.connection)}/pack/${enc(packId)}`;

  function checksList(report) {
    return [h("h3", {}, t("ui.checks")),
      h("ul", { class: "checks", id: "checks" }, report.checks.map((check) => h("li", { "data-check": check.name, "data-ok": String(check.ok) },
        h("span", { class: `mark ${check.ok ? "ok" : "ko"}`, "aria-hidden": "true" }, check.ok ? "✓" : "✗"),
        h("span", {}, has(`check.${check.name}`) ? t(`check.${check.name}`) : check.name, h("span", { class: "visually-hidden" }, `: ${check.ok ? t("ui.check_ok") : t("ui.check_failed")}`)),
        h("span", { class: "detail", lang: "en" }, check.detail),
        check.ok ? null : h("strong", { class: "action" }, `${t("ui.what_to_do")}: ${actionText(check.reason, report.seller_action)}`))))];
  }

  // The error entry's history and the latest execution: the same for a sale and for a cart.
  function drawRecord(main, state, entry, of) {
    if (entry && entry.history && entry.history.length) {
      const caption = t("ui.history");
      const head = h("tr", {}, [t("ui.when"), t("ui.error_type"), t("ui.message"), t("ui.by")].map((name) => h("th", { scope: "col" }, name)));
      const rows = entry.history.map((event) => h("tr", {}, h("td", {}, when(event.at)), h("td", {}, t(`error_type.${event.error_type}`)), h("td", {}, coded("error_text", event.error_type, event.message)), h("td", {}, event.trigger ? t(`trigger.${event.trigger}`) : "")));
      main.append(tableIn(caption, h("table", { id: "history-table" }, h("caption", { class: "visually-hidden" }, caption), h("thead", {}, head), h("tbody", {}, rows))));
    } else {
      main.append(h("p", { class: "hint" }, t(`ui.no_history${of}`)));
    }
    main.append(h("h3", {}, t("ui.latest_execution")));
    const execution = state && state.latest_execution;
    if (!execution) { main.append(h("p", { class: "hint" }, t(`ui.no_execution${of}`))); return; }
    main.append(h("dl", { id: "execution" },
      h("dt", {}, t("ui.name")), h("dd", { class: "id" }, execution.name),
      h("dt", {}, t("ui.status")), h("dd", {}, execution.status),
      h("dt", {}, t("ui.started")), h("dd", {}, when(execution.started_at))),
      h("p", {}, h("a", { id: "execution-link", href: stepFunctionsLink(execution.execution_arn), target: "_blank", rel: "noopener noreferrer" }, t("ui.open_in_console"))));
  }

  function linesTable(lines) {
    const yes = (ok) => (ok ? t("ui.yes") : t("ui.no"));
    const caption = t("ui.lines");
    const head = h("tr", {}, [t("ui.listing"), "SKU", t("ui.linked"), t("ui.active"), t("ui.synced")].map((name) => h("th", { scope: "col" }, name)));
    const rows = lines.map((line) => h("tr", {}, h("td", { class: "id" }, line.item_id), h("td", {}, line.sku || ""),
      h("td", {}, yes(line.linked)), h("td", {}, yes(line.active)), h("td", {}, yes(line.synced))));
    return tableIn(caption, h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, rows)));
  }

  function resultView(result) {
    if (result.failure) return failureView(result.failure);
    return h("p", { id: "sale-outcome" }, outcomeBadge(result.outcome), result.reason ? ` ${reasonText(result.reason)}` : "",
      GOOD.includes(result.outcome) ? null : h("span", { class: "action" }, actionText(result.reason, result.seller_action)));
  }

  function stepFunctionsLink(arn) {
    const region = (arn || "").split(":")[3] || "us-east-1";
    return `https://${region}.console.aws.amazon.com/states/home?region=${region}#/v2/executions/details/${enc(arn)}`;
  }

  async function relinkSale() {
    const sale = model.sale;
    const id = sale.id;
    sale.busy = t("ui.relinking");
    sale.result = null;
    drawScreen();
    // As for jobs: a relink whose answer was lost goes again with its key, so it never starts a second episode.
    if (!sale.relinkKey) sale.relinkKey = newKey();
    const answer = await api("POST", `${connectionPath()}/sales/${enc(id)}/relink`, undefined, { "Idempotency-Key": sale.relinkKey });
    if (answer.status !== 0 && answer.status < 500) sale.relinkKey = null;
    let result = answer.status === 200 || answer.status === 202 ? answer.body : { failure: failureOf(answer) };
    if (answer.status === 202) {
      for (let i = 0; i < 600 && model.sale.id === id; i += 1) {
        const state = await api("GET", `${connectionPath()}/sales/${enc(id)}`);
        if (state.status === 200 && TERMINAL.includes(state.body.outcome)) { result = state.body; break; }
        await sleep(1000);
      }
    }
    await settleSale(id, result);
  }

  async function resyncSale() {
    const sale = model.sale;
    const id = sale.id;
    sale.busy = t("ui.resyncing");
    sale.result = null;
    drawScreen();
    const answer = await api("POST", `${connectionPath()}/sales/${enc(id)}/resync`);
    await settleSale(id, answer.status === 200 ? answer.body : { failure: failureOf(answer) });
  }

  async function settleSale(id, result) {
    if (model.sale.id !== id) return;
    model.sale.busy = null;
    model.sale.result = result;
    model.sale.report = null;
    await loadSale();
    announce(result.outcome ? `${id}: ${t(`outcome.${result.outcome}`)}` : failureText(result.failure));
  }

  // --- screen: one cart (a pack of several sales, reprocessed whole: DESIGN §3.1) ------------------------------------
  async function loadPack() {
    const pack = model.pack;
    const id = pack.id;
    // The cart's row (outcome, blocking sale, history, execution) and what ML says of it now (its checks, and the sales
    // of the pack that are another seller's: only the verification lists those).
    const state = await api("GET", `${connectionPath()}/packs/${enc(id)}`);
    const report = await api("GET", `${connectionPath()}/sales/${enc(id)}/verification`);
    if (model.pack.id !== id) return;
    pack.state = state;
    pack.report = report;
    if (model.screen === "pack") drawScreen();
  }

  function drawPack(main) {
    const pack = model.pack;
    const input = h("input", { id: "pack-input", name: "pack_id", inputmode: "numeric", spellcheck: "false", required: true });
    input.value = pack.id;
    main.append(h("h2", {}, t("ui.nav_pack")),
      h("form", { class: "row", id: "pack-form", onsubmit: (event) => { event.preventDefault(); if (input.value.trim()) routeTo("pack", input.value.trim()); } },
        h("label", { for: "pack-input" }, t("ui.pack_label")), input, h("button", { type: "submit" }, t("ui.open_pack"))));
    if (!pack.id) { main.append(h("p", { class: "hint" }, t("ui.pack_hint"))); return; }
    if (!pack.state) { main.append(h("p", { "aria-busy": "true" }, t("ui.loading"))); return; }
    const state = pack.state.status === 200 ? pack.state.body : null;
    const report = pack.report && pack.report.status === 200 ? pack.report.body : null;
    const cart = report && report.cart;
    main.append(h("h3", { id: "pack-title" }, `${t("ui.pack_id")} ${pack.id}`));
    if (report && !cart) {
      // Not a cart: say what ML knows the id as, with the sales it holds (a one-order pack is a single sale).
      const ids = report.identifier.sale_ids || [];
      main.append(h("p", { class: "notice bad", id: "not-a-cart", "data-kind": report.identifier.kind },
        t("ui.not_a_cart", { kind: t(`kind.${report.identifier.kind}`) }), ids.length ? [" — ", linkedText("ui.holds", { ids: saleLinks(ids) })] : null));
    }
    if (pack.report && !report) main.append(failureView(failureOf(pack.report)));

    main.append(h("h3", {}, t("ui.pack_stands")));
    const stands = h("div", { id: "pack-state" });
    if (state) {
      stands.append(h("p", {}, outcomeBadge(state.outcome), state.reason ? h("span", { "data-reason": state.reason }, ` ${reasonText(state.reason)}`) : "",
        ` · ${t("ui.attempts")}: ${state.attempts || 0}`,
        GOOD.includes(state.outcome) || !state.reason ? null : h("span", { class: "action" }, `${t("ui.what_to_do")}: ${actionText(state.reason, state.seller_action)}`),
        apiWords(state.detail)));
      if (state.sale_id) stands.append(h("p", { id: "blocking-sale" }, linkedText("ui.blocked_by", { sale: saleLinks([state.sale_id]) })));
    } else if (pack.state.status === 404 && failureOf(pack.state).code === "pack_not_seen") {
      stands.append(h("p", { id: "pack-never-seen" }, t("ui.pack_never_seen")));
    } else {
      stands.append(failureView(failureOf(pack.state)));
    }
    main.append(stands);
    const saleIds = (state && state.sale_ids && state.sale_ids.length ? state.sale_ids : (cart && cart.sale_ids)) || [];
    const others = (state && state.other_sellers_sale_ids) || (cart && cart.other_sellers_sale_ids) || [];
    const facts = [[t("ui.cart_sales"), h("span", { id: "pack-sales" }, saleIds.length ? saleLinks(saleIds) : "—")]];
    if (others.length) facts.push([t("ui.other_sellers"), [h("span", { id: "other-sellers" }, saleLinks(others)), h("span", { class: "hint" }, ` ${t("ui.other_sellers_hint")}`)]]);
    if (cart && cart.status) facts.push([t("ui.pack_status"), h("span", { lang: "en" }, cart.status)]);
    if (cart && cart.shipment_id) facts.push([t("ui.shipment"), cart.shipment_id]);
    main.append(h("dl", { class: "facts" }, facts.map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value)))));
    if (report && cart) {
      main.append(h("p", { id: "next-action", "data-next": report.next_action }, h("strong", {}, `${t("ui.next_action")}: `), t(`next_cart.${report.next_action}`)));
      main.append(...checksList(report));
    }
    main.append(h("div", { class: "buttons" },
      h("button", { type: "button", id: "pack-relink", disabled: Boolean(pack.busy), onclick: relinkPack }, t("ui.relink_cart"))));
    const result = h("div", { id: "pack-result", "aria-live": "polite" });
    if (pack.busy) result.append(h("p", {}, pack.busy));
    else if (pack.result) result.append(packResultView(pack.result));
    main.append(result);
    main.append(h("h3", {}, t("ui.history")));
    drawRecord(main, state, state && state.error_entry, "_cart");
  }

  function packResultView(result) {
    if (result.failure) {
      // 422 not_a_cart says what the id is and which sales to use instead: one click away each.
      const ids = (result.failure.body && result.failure.body.sale_ids) || [];
      return failureView(result.failure, ids.length ? h("p", {}, linkedText("ui.use_its_sales", { ids: saleLinks(ids) })) : null);
    }
    return h("p", { id: "pack-outcome" }, outcomeBadge(result.outcome), result.reason ? ` ${reasonText(result.reason)}` : "",
      result.execution ? h("span", { class: "action", id: "pack-execution" }, t("ui.execution_started", { name: result.execution })) : null,
      GOOD.includes(result.outcome) ? null : h("span", { class: "action" }, actionText(result.reason, result.seller_action)));
  }

  async function relinkPack() {
    const pack = model.pack;
    const id = pack.id;
    pack.busy = t("ui.relinking");
    pack.result = null;
    drawScreen();
    // As for a sale: a relink whose answer was lost goes again with its key, so it never starts a second episode.
    if (!pack.relinkKey) pack.relinkKey = newKey();
    const answer = await api("POST", `${connectionPath()}/packs/${enc(id)}/relink`, undefined, { "Idempotency-Key": pack.relinkKey });
    if (answer.status !== 0 && answer.status < 500) pack.relinkKey = null;
    let result = answer.status === 200 || answer.status === 202 ? answer.body : { failure: failureOf(answer) };
    if (answer.status === 202) {
      const execution = answer.body.execution_name || answer.body.execution_id || "";
      pack.busy = t("ui.relinking_cart", { name: execution });
      if (model.pack.id === id && model.screen === "pack") drawScreen();
      for (let i = 0; i < 600 && model.pack.id === id; i += 1) {
        const state = await api("GET", `${connectionPath()}/packs/${enc(id)}`);
        if (state.status === 200 && TERMINAL.includes(state.body.outcome)) { result = { ...state.body, execution }; break; }
        await sleep(1000);
      }
    }
    if (model.pack.id !== id) return;
    pack.busy = null;
    pack.result = result;
    await loadPack();
    announce(result.outcome ? `${id}: ${t(`outcome.${result.outcome}`)}` : failureText(result.failure));
  }

  // --- start --------------------------------------------------------------------------------------------------------
  async function start() {
    const [config, en, es] = await Promise.all(["config.json", "i18n/en.json", "i18n/es.json"].map((name) => fetch(name).then((r) => r.json())));
    model.config = config;
    texts.en = en;
    texts.es = es;
    const asked = new URLSearchParams(window.location.search).get("lang");
    let stored = null;
    try { stored = window.localStorage.getItem("console.lang"); } catch (error) { /* ignore */ }
    const browser = (navigator.language || "").toLowerCase().startsWith("es") ? "es" : "en";
    model.lang = [asked, stored, browser].find((lang) => lang === "es" || lang === "en");
    const list = $("#connection-list");
    for (const id of config.connections) list.append(h("option", { value: id }));
    let last = null;
    try { last = window.localStorage.getItem("console.connection"); } catch (error) { /* ignore */ }
    $("#connection-input").value = last || config.connections[0] || "";
    $("#connection-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("#connection-input").value.trim();
      if (!value) return;
      window.location.hash = `#/c/${enc(value)}/${model.connection ? model.screen : "errors"}`;
    });
    for (const button of document.querySelectorAll(".lang-button")) button.addEventListener("click", () => setLanguage(button.dataset.lang));
    window.addEventListener("hashchange", onRoute);
    applyStaticTexts();
    document.body.dataset.ready = "true";
    await onRoute();
  }

  start();
})();
