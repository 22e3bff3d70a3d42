/* labelaudit review page.
 *
 * Reads window.LABELAUDIT_REVIEW (data.js, written by `labelaudit review`) and builds every
 * element with createElement/textContent and DOM properties: no data ever goes through
 * innerHTML, so a class or file name such as <img src=x onerror=...> shows as text.
 * Decisions live in localStorage under "labelaudit-review:<review_key>" and are exported as
 * decisions.csv (sample_id, decision, new_label, note, source, check_size, check_max_wrong),
 * cells escaped against spreadsheet formulas as labelaudit's own CSVs are. Every change of decisions is one step of an undo stack
 * (Backspace, Ctrl+Z), saved in the same localStorage entry as the decisions it undoes.
 */
(function () {
  "use strict";

  var started = performance.now();
  var D = window.LABELAUDIT_REVIEW;
  function $(id) { return document.getElementById(id); }
  if (!D || !D.samples || !D.classes) {
    $("load-error").hidden = false;
    return;
  }

  var S = D.samples;
  var N = S.id.length;
  var CLASSES = D.classes;
  var K = CLASSES.length;
  var PAGE = D.page_size || 100;
  var BINS = D.histogram_bins;
  // The threshold slider acts on P(label wrong) and flags above its threshold (a logit scale);
  // for a scan from before calibrated probabilities, on label quality, flagging below it (a log
  // scale). EDGES[p]: the value at position p, increasing.
  var SLIDER = D.slider_column || "label_quality";
  var ABOVE = D.slider_flags === "above";
  var SCORE = S[SLIDER];
  var SLIDER_NAME = ABOVE ? "P(label wrong)" : "label quality";
  var EDGES = D.slider_edges || D.histogram.map(function (_, p) { return p / BINS; });
  // Whether the slider at the value limit keeps a sample of score x (flags it).
  function keeps(x, limit) { return ABOVE ? x > limit : x < limit; }
  var HIST_BARS = 50; // bars of the histogram under the slider
  var DECISIONS = ["accept", "keep", "relabel", "remove", "unsure"];
  // The issue types a sample can be listed for (labelaudit/audit/issue_types.py), in reason order.
  var ISSUE_TYPES = D.issue_types || [{ reason: "label", title: "suspect label", view: "suspect labels" }];
  var REASON_TEXT = {};
  ISSUE_TYPES.forEach(function (t) { REASON_TEXT[t.reason] = t.title; });
  var DONE = { accept: "accepted", keep: "kept", relabel: "relabelled", remove: "remove from dataset", unsure: "unsure" };
  var KEY_DECISION = { a: "accept", g: "keep", r: "remove", u: "unsure" };
  var STORE_KEY = "labelaudit-review:" + D.review_key;
  var PICKER_MAX = 60; // the class picker lists at most this many matching classes at once
  var HISTORY_MAX = 500; // undo steps kept
  var STORED_STEP_MAX = 2000; // a bigger step (an import) is undoable until a reload, with the steps before it
  var SOURCE = /^(manual|(check|bulk):[A-Za-z0-9_-]{1,64})$/; // how a decision was made (decisions.csv source)
  var checks = {}, checkOrder = [], active = null, imported = {}; // spot-checks (see "bulk decisions")
  var MATRIX_MAX_CLASSES = 60; // above this, a list of the most frequent pairs replaces the table

  var idIndex = Object.create(null);
  var classIndex = Object.create(null);
  var i, j;
  for (i = 0; i < N; i++) idIndex[S.id[i]] = i;
  for (i = 0; i < K; i++) classIndex[CLASSES[i]] = i;

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmt(x, digits) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits); }
  function int(x) { return Number(x).toLocaleString("en-US"); }
  function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + "%"; }

  // ---- decisions ---------------------------------------------------------------------------
  // decisions[i] = {decision: one of DECISIONS or "", label: class index (relabel) or -1, note: text}
  var decisions = new Array(N);
  var others = {}; // stored entries for samples this page does not list (another --limit): kept
  var storage = null;
  try {
    storage = window.localStorage;
    storage.getItem(STORE_KEY);
  } catch (err) {
    storage = null;
  }

  function warn(text) {
    var box = $("storage-warning");
    box.textContent = text;
    box.hidden = false;
  }

  function loadDecisions() {
    if (!storage) {
      warn("This browser does not let the page keep data (storage blocked for files): decisions last until the tab " +
           "is closed. Export decisions.csv before closing it.");
      return;
    }
    var saved;
    try {
      saved = JSON.parse(storage.getItem(STORE_KEY) || "null");
    } catch (err) {
      saved = null;
    }
    if (!saved || typeof saved.decisions !== "object" || saved.decisions === null) return;
    Object.keys(saved.decisions).forEach(function (id) {
      var entry = saved.decisions[id];
      if (!Array.isArray(entry)) return;
      var index = idIndex[id];
      if (index === undefined) { others[id] = entry; return; }
      var decision = DECISIONS.indexOf(entry[0]) >= 0 ? entry[0] : "";
      var label = decision === "relabel" && entry[1] in classIndex ? classIndex[entry[1]] : -1;
      if (decision === "relabel" && label < 0) decision = "";
      var note = typeof entry[2] === "string" ? entry[2] : "";
      var source = decision && typeof entry[3] === "string" && SOURCE.test(entry[3]) && entry[3] !== "manual" ? entry[3] : "";
      if (decision || note) decisions[index] = { decision: decision, label: label, note: note, source: source };
    });
    if (Array.isArray(saved.history)) history = saved.history.map(stepFromStore).filter(function (s) { return s; });
    if (saved.checks && typeof saved.checks === "object" && Array.isArray(saved.check_order)) {
      saved.check_order.forEach(function (id) { if (saved.checks[id]) { checks[id] = saved.checks[id]; checkOrder.push(id); } });
      if (saved.active && checks[saved.active] && checks[saved.active].state === "running") active = saved.active;
    }
  }

  function saveDecisions() {
    if (!storage) return;
    var out = {};
    Object.keys(others).forEach(function (id) { out[id] = others[id]; });
    for (var k = 0; k < N; k++) {
      var d = decisions[k];
      if (d && (d.decision || d.note)) out[S.id[k]] = [d.decision, d.label >= 0 ? CLASSES[d.label] : null, d.note, d.source || ""];
    }
    try {
      storage.setItem(STORE_KEY, JSON.stringify({
        version: 1, run: D.run.path, saved: new Date().toISOString(), decisions: out, history: storedHistory().map(stepToStore),
        checks: checks, check_order: checkOrder, active: active
      }));
    } catch (err) {
      warn("The browser refused to store the last decision (" + err.name + "): export decisions.csv now so nothing is lost.");
    }
  }

  function newLabel(index, d) {
    if (d.decision === "accept") return CLASSES[S.suggested[index]];
    if (d.decision === "keep") return CLASSES[S.given[index]];
    if (d.decision === "relabel") return CLASSES[d.label];
    return "";
  }

  // ---- undo --------------------------------------------------------------------------------
  // history: the undo stack, oldest first. A step is the list of the cards one action changed,
  // each [index, before, after] with before/after = [decision, label index, source] (source ""
  // for manual, "check:<id>" or "bulk:<id>"). A step is undone only while its cards still hold
  // its "after" (the stack and the stored decisions never disagree).
  var history = [];

  function stateOf(index) {
    var d = decisions[index];
    return d && d.decision ? [d.decision, d.label, d.source || ""] : ["", -1, ""];
  }
  function sameState(a, b) { return a[0] === b[0] && a[1] === b[1] && (a[2] || "") === (b[2] || ""); }
  function stateToStore(st) { return [st[0], st[1] >= 0 ? CLASSES[st[1]] : null, st[2] || ""]; }
  function stateFromStore(st) {
    if (!Array.isArray(st) || (st[0] !== "" && DECISIONS.indexOf(st[0]) < 0)) return null;
    var label = st[0] === "relabel" ? classIndex[st[1]] : -1;
    if (label === undefined) return null;
    return [st[0], label, st[0] && typeof st[2] === "string" && SOURCE.test(st[2]) && st[2] !== "manual" ? st[2] : ""];
  }
  // The steps after the last one too big to store (localStorage holds a few MB).
  function storedHistory() {
    var from = 0;
    for (var h = 0; h < history.length; h++) if (history[h].length > STORED_STEP_MAX) from = h + 1;
    return history.slice(from);
  }
  function stepToStore(step) {
    return step.map(function (c) { return [S.id[c[0]], stateToStore(c[1]), stateToStore(c[2])]; });
  }
  function stepFromStore(stored) {
    if (!Array.isArray(stored) || !stored.length) return null;
    var step = [];
    for (var s = 0; s < stored.length; s++) {
      var c = stored[s];
      var index = Array.isArray(c) ? idIndex[c[0]] : undefined;
      var before = index === undefined ? null : stateFromStore(c[1]);
      var after = index === undefined ? null : stateFromStore(c[2]);
      if (!before || !after) return null; // a sample this page does not list, or a class it lacks
      step.push([index, before, after]);
    }
    return step;
  }

  function setState(index, st) {
    var d = decisions[index] || { decision: "", label: -1, note: "" };
    d.decision = st[0];
    d.label = st[0] === "relabel" ? st[1] : -1;
    d.source = st[0] ? st[2] || "" : "";
    decisions[index] = d;
  }

  // Apply changes [[index, decision, label, source], ...] as one undo step (source: see history;
  // left out, a card of the running spot-check is "check:<id>", any other manual).
  function change(list) {
    var step = [];
    list.forEach(function (c) {
      var before = stateOf(c[0]);
      var source = c[1] ? (c.length > 3 ? c[3] || "" : checkSourceOf(c[0])) : "";
      var after = [c[1], c[1] === "relabel" ? c[2] : -1, source];
      if (sameState(before, after)) return;
      setState(c[0], after);
      step.push([c[0], before, after]);
    });
    if (!step.length) return 0;
    history.push(step);
    if (history.length > HISTORY_MAX) history.splice(0, history.length - HISTORY_MAX);
    saveDecisions();
    step.forEach(function (c) { refreshCard(c[0]); });
    updateCounts();
    updateMatrixCounts();
    return step.length;
  }

  // A class chosen for a card is recorded as chosen: relabel to it, even when it is the given or
  // the suggested class (apply gives the sample that class either way).
  function decide(index, decision, label) { change([[index, decision, label]]); }

  function describe(index) {
    var d = decisions[index];
    if (!d || !d.decision) return "undecided";
    var text = d.decision === "remove" || d.decision === "unsure" ? DONE[d.decision] : DONE[d.decision] + " \u2192 " + newLabel(index, d);
    if (/^bulk:/.test(d.source || "")) text += " (bulk, spot-check " + d.source.slice(5) + ")";
    else if (/^check:/.test(d.source || "")) text += " (card of spot-check " + d.source.slice(6) + ")";
    return text;
  }

  function undo() {
    var step = history.pop();
    if (!step) { status("Nothing to undo."); return; }
    var stale = step.some(function (c) { return !sameState(stateOf(c[0]), c[2]); });
    if (stale) { // changed since in a way the stack does not know (e.g. another tab): drop the stack
      history = [];
      saveDecisions();
      status("Not undone: that card changed since; the undo history was cleared.");
      return;
    }
    step.forEach(function (c) { setState(c[0], c[1]); });
    var bulk = /^bulk:/.test(step[0][2][2]) ? checks[step[0][2][2].slice(5)] : null;
    if (bulk) bulk.undone = true; // the spot-check stays on record, its bulk decision is gone
    saveDecisions();
    step.forEach(function (c) { refreshCard(c[0]); });
    if (bulk) updateChecks();
    updateCounts();
    updateMatrixCounts();
    var index = step[0][0];
    showCard(index);
    status("Undone: " + S.id[index] + (step.length > 1 ? " and " + (step.length - 1) + " more" : "") + " back to " + describe(index) +
      " (" + history.length + " more step" + (history.length === 1 ? "" : "s") + " to undo).");
  }

  // Bring a sample's card into view and highlight it, when the filters list it.
  function showCard(index) {
    var position = matches.indexOf(index);
    if (position < 0) return;
    var wanted = Math.floor(position / PAGE);
    if (wanted !== page) { page = wanted; current = -1; render(); }
    for (var p = 0; p < cards.length; p++) {
      if (+cards[p].getAttribute("data-index") === index) { setCurrent(p, true); return; }
    }
  }

  function status(text, isError) {
    var box = $("status");
    box.textContent = text;
    box.classList.toggle("error", !!isError);
    box.hidden = false;
    if (active) $("bulk").style.top = $("top").offsetHeight + "px"; // the header grew by this line
  }

  function setNote(index, text) {
    var d = decisions[index] || { decision: "", label: -1, note: "" };
    d.note = text;
    decisions[index] = d;
    saveDecisions();
    refreshCard(index);
  }

  function isDecided(index) { return !!(decisions[index] && decisions[index].decision); }

  // A near-duplicate group's decision: keep one member (given label) and remove the others, or remove all.
  function decideGroup(index, action) { // one undo step for the whole group
    change((GROUPS[S.group[index]] || [index]).map(function (k) {
      return [k, action === "keep-one" && k === index ? "keep" : "remove", -1];
    }));
  }

  // ---- decisions.csv -----------------------------------------------------------------------
  function csvCell(value) {
    var text = value === null || value === undefined ? "" : String(value);
    if (/^'*[=+\-@\t\r]/.test(text)) text = "'" + text; // as labelaudit.reports.escape_cell
    if (/[",\r\n]/.test(text)) text = '"' + text.replace(/"/g, '""') + '"';
    return text;
  }

  function decisionsCsv() {
    var lines = ["sample_id,decision,new_label,note,source,check_size,check_max_wrong"];
    for (var k = 0; k < N; k++) {
      var d = decisions[k];
      if (!d || !d.decision) continue;
      var check = d.source ? checks[d.source.split(":")[1]] : null;
      lines.push([S.id[k], d.decision, newLabel(k, d), d.note, d.source || "manual", check ? check.size : "",
        check ? check.rate : ""].map(csvCell).join(","));
    }
    return lines.join("\n") + "\n";
  }

  function exportCsv() {
    var text = decisionsCsv();
    var count = text.split("\n").length - 2; // the header and the final line end
    var blob = new Blob([text], { type: "text/csv;charset=utf-8" });
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "decisions.csv";
    document.body.appendChild(link);
    link.click();
    setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
    status(count
      ? "Exported " + int(count) + " decision" + (count === 1 ? "" : "s") + " to decisions.csv (in the browser's downloads), at " +
        new Date().toLocaleTimeString("en-GB") + "."
      : "Exported decisions.csv without decisions: nothing is decided yet.");
  }

  // ---- importing a decisions.csv -----------------------------------------------------------
  // To resume a review (or take over another's): the file's decisions replace those of the
  // samples it lists, as one undo step. Checked as labelaudit apply checks it; a file with any
  // problem imports nothing and the message names the first problem and its line.
  function parseCsv(text) {
    var rows = [], row = [], cell = "", quoted = false, line = 1, rowLine = 1, wasQuoted = false;
    if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    for (var p = 0; p < text.length; p++) {
      var ch = text[p];
      if (quoted) {
        if (ch === '"' && text[p + 1] === '"') { cell += '"'; p++; }
        else if (ch === '"') quoted = false;
        else { if (ch === "\n") line++; cell += ch; }
      } else if (ch === '"' && cell === "" && !wasQuoted) { quoted = true; wasQuoted = true; }
      else if (ch === ",") { row.push(cell); cell = ""; wasQuoted = false; }
      else if (ch === "\n" || ch === "\r") {
        if (ch === "\r" && text[p + 1] === "\n") p++;
        row.push(cell); rows.push({ line: rowLine, cells: row });
        row = []; cell = ""; wasQuoted = false; line++; rowLine = line;
      } else cell += ch;
    }
    if (quoted) throw new Error("a quoted cell that starts on line " + rowLine + " never ends");
    if (cell !== "" || row.length) { row.push(cell); rows.push({ line: rowLine, cells: row }); }
    return rows;
  }

  function unescapeCell(text) { return /^'+[=+\-@\t\r]/.test(text) ? text.slice(1) : text; }

  // The changes a decisions.csv asks for, [[index, decision, label, note], ...]; throws an Error
  // whose message names the first problem.
  function readDecisionsCsv(text) {
    var rows = parseCsv(text).filter(function (r) { return r.cells.some(function (c) { return c.trim() !== ""; }); });
    if (!rows.length) throw new Error("the file is empty");
    var header = rows[0].cells.map(function (c) { return c.trim(); });
    var col = {};
    ["sample_id", "decision", "new_label", "note", "source", "check_size", "check_max_wrong"].forEach(function (name) { col[name] = header.indexOf(name); });
    if (col.sample_id < 0 || col.decision < 0) {
      throw new Error("it lacks the column " + (col.sample_id < 0 ? "sample_id" : "decision") + " (a decisions.csv has sample_id, decision, new_label, note)");
    }
    var seen = Object.create(null);
    var out = [];
    imported = {};
    rows.slice(1).forEach(function (r) {
      function cell(name) { return col[name] >= 0 && col[name] < r.cells.length ? unescapeCell(r.cells[col[name]]) : ""; }
      var where = " on line " + r.line;
      var id = cell("sample_id");
      var decision = cell("decision").trim().toLowerCase();
      var label = cell("new_label");
      if (!decision && label.trim()) decision = "relabel";
      if (!id.trim()) throw new Error("an empty sample_id" + where);
      var index = idIndex[id];
      if (index === undefined) throw new Error("the sample_id \u201c" + id + "\u201d" + where + " is not listed on this page");
      if (seen[id]) throw new Error("the sample_id \u201c" + id + "\u201d" + where + " repeats line " + seen[id]);
      seen[id] = r.line;
      if (decision && DECISIONS.indexOf(decision) < 0) throw new Error("the decision \u201c" + decision + "\u201d" + where + " is not one of " + DECISIONS.join(", "));
      var c = -1;
      if (decision === "relabel") {
        c = label in classIndex ? classIndex[label] : label.trim() in classIndex ? classIndex[label.trim()] : -1;
        if (!label.trim()) throw new Error("relabel with an empty new_label" + where);
        if (c < 0) throw new Error("new_label \u201c" + label + "\u201d" + where + " is not a class of the scan");
      } else if (label.trim()) {
        var implied = decision === "accept" ? CLASSES[S.suggested[index]] : decision === "keep" ? CLASSES[S.given[index]] : null;
        if (label.trim() !== implied) throw new Error("new_label \u201c" + label + "\u201d beside " + (decision || "no decision") + where + " contradicts it");
      }
      var source = cell("source").trim() || "manual";
      if (!SOURCE.test(source)) throw new Error("the source \u201c" + source + "\u201d" + where + " is not manual, check:<id> or bulk:<id>");
      if (source !== "manual") {
        var size = +cell("check_size"), rate = +cell("check_max_wrong");
        if (!(size >= 1 && size === Math.floor(size) && rate > 0 && rate < 1)) {
          throw new Error("the spot-check " + source + where + " lacks a check_size or check_max_wrong");
        }
        var id = source.split(":")[1];
        if (!checks[id]) imported[id] = { id: id, size: size, rate: rate, state: "imported", decision: "", cards: [], rest: [] };
      }
      if (decision || cell("note")) out.push([index, decision, c, cell("note"), source === "manual" ? "" : source]);
    });
    return out;
  }

  function importCsv(file) {
    var reader = new FileReader();
    reader.onload = function () {
      var list;
      try {
        list = readDecisionsCsv(String(reader.result));
      } catch (err) {
        status("Nothing imported from " + file.name + ": " + err.message + ".", true);
        return;
      }
      list.forEach(function (c) { if (c[3]) { var d = decisions[c[0]] || { decision: "", label: -1, note: "" }; d.note = c[3]; decisions[c[0]] = d; } });
      Object.keys(imported).forEach(function (id) { checks[id] = imported[id]; checkOrder.push(id); });
      var decided = list.filter(function (c) { return c[1]; });
      var changed = change(decided.map(function (c) { return [c[0], c[1], c[2], c[4]]; }));
      saveDecisions();
      list.forEach(function (c) { refreshCard(c[0]); });
      status("Imported " + int(decided.length) + " decision" + (decided.length === 1 ? "" : "s") + " from " + file.name + " (" +
        int(changed) + " changed on this page; Backspace undoes the import).");
    };
    reader.onerror = function () { status("Nothing imported: the browser could not read " + file.name + ".", true); };
    reader.readAsText(file, "utf-8");
  }

  // ---- bulk decisions with a spot-check ----------------------------------------------------
  // The undecided samples of the current selection (the filtered grid) get one decision, but
  // only after a random sample of them, decided card by card, all agree with it. With n cards
  // all agreeing, "at most a share r of the rest is wrong" holds with 95% confidence: were r or
  // more wrong, n agreeing draws would happen with probability (1 - r)^n <= 5% (the zero-failure
  // binomial bound; drawing without replacement only makes it safer). n = ceil(ln 0.05 / ln(1 - r)).
  var BULK_TEXT = { accept: "accept the suggested label", keep: "keep the given label", remove: "remove the sample" };
  // checks[id] = {id, decision, rate, size, cards: [sample ids], rest: [sample ids], selection:
  // text, given, suggested (the T cell, -1 when none), state: running | agreed | disagreed |
  // stopped | imported, agreed, applied, undone}
  function checkSize(rate) { return Math.ceil(Math.log(0.05) / Math.log(1 - rate)); }
  function hash32(text) { // FNV-1a
    var h = 0x811c9dc5;
    for (var p = 0; p < text.length; p++) { h ^= text.charCodeAt(p); h = Math.imul(h, 0x01000193) >>> 0; }
    return h >>> 0;
  }
  function random32(seed) { // mulberry32: a small seeded generator, the same draws in every browser
    return function () {
      seed = (seed + 0x6d2b79f5) | 0;
      var t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  // What a decision gives a sample: a class index, "remove", or null (unsure, undecided).
  function meaning(index, decision, label) {
    if (decision === "accept") return S.suggested[index];
    if (decision === "keep") return S.given[index];
    if (decision === "relabel") return label;
    return decision === "remove" ? "remove" : null;
  }
  // A card's verdict in a check: null undecided, true when its decision means the proposed one.
  function agrees(check, index) {
    var d = decisions[index];
    if (!d || !d.decision) return null;
    var m = meaning(index, d.decision, d.label);
    return m !== null && m === meaning(index, check.decision, -1);
  }
  function checkSourceOf(index) {
    return active && checkCards[index] ? "check:" + active : "";
  }
  var checkCards = {}; // indices of the running check's cards
  function checkIndices(check, key) {
    return (check[key] || []).map(function (id) { return idIndex[id]; }).filter(function (k) { return k !== undefined; });
  }

  function selectionText() {
    var parts = [];
    if (filters.given >= 0 && filters.suggested >= 0) parts.push("the cell of T true " + CLASSES[filters.suggested] + ", given " + CLASSES[filters.given]);
    else if (filters.given >= 0) parts.push("given label " + CLASSES[filters.given]);
    else if (filters.suggested >= 0) parts.push("suggested label " + CLASSES[filters.suggested]);
    if (filters.pair) parts.push("mixed up " + CLASSES[filters.pair[0]] + " \u2194 " + CLASSES[filters.pair[1]]);
    if (filters.view) parts.push("the view " + ISSUE_TYPES.filter(function (t) { return t.reason === filters.view; })[0].view);
    if (filters.threshold !== D.threshold) parts.push(SLIDER_NAME + (ABOVE ? " > " : " < ") + thresholdText());
    return parts.length ? parts.join(", ") : "everything listed";
  }
  function undecidedMatches() { return matches.filter(function (k) { return !isDecided(k); }); }

  function updateBulkButton() {
    var button = $("bulk-open");
    var count = active ? 0 : undecidedMatches().length;
    button.textContent = "Decide all " + int(count) + " with a spot-check\u2026";
    button.disabled = !!active || !count;
  }

  function bulkStatement() {
    var rate = +$("bulk-rate").value, n = checkSize(rate), pool = undecidedMatches().length;
    var decision = BULK_TEXT[$("bulk-decision").value];
    $("bulk-selection").textContent = "Selection: " + selectionText() + " \u2014 " + int(matches.length) + " samples, " + int(pool) +
      " undecided (decided ones keep their decisions).";
    var text = "The page draws " + n + " of the " + int(pool) + " undecided at random for you to decide one by one. If all " + n +
      " agree with \u201c" + decision + "\u201d, it is applied to the other " + int(Math.max(0, pool - n)) + ": then, with 95% confidence, at most " +
      Math.round(rate * 100) + "% of them are wrong (were more wrong, " + n + " agreeing cards would happen with probability " +
      (1 - rate).toFixed(2) + "^" + n + " = " + pct(Math.pow(1 - rate, n)) + " < 5%). If any disagrees, nothing is applied to the rest.";
    if (pool <= n) text = "A spot-check of " + n + " needs more than " + n + " undecided samples in the selection (it has " + int(pool) +
      "): decide them card by card, or choose a higher rate.";
    $("bulk-statement").textContent = text;
    $("bulk-start").disabled = pool <= n;
  }

  function openBulk() {
    $("bulk").hidden = false;
    $("bulk-setup").hidden = false;
    $("bulk-running").hidden = true;
    bulkStatement();
  }

  function startCheck() {
    var decision = $("bulk-decision").value, rate = +$("bulk-rate").value, n = checkSize(rate);
    var pool = undecidedMatches().sort(function (a, b) { return a - b; });
    if (pool.length <= n) return;
    var ids = pool.map(function (k) { return S.id[k]; });
    var seed = hash32(D.review_key + "\n" + decision + "\n" + rate + "\n" + ids.join("\n"));
    var id = ("0000000" + seed.toString(16)).slice(-8);
    var draw = random32(seed), order = pool.slice();
    for (var p = 0; p < n; p++) { // a partial Fisher-Yates shuffle: the first n are the draw
      var q = p + Math.floor(draw() * (order.length - p));
      var t = order[p]; order[p] = order[q]; order[q] = t;
    }
    var cardsOf = order.slice(0, n).sort(function (a, b) { return a - b; });
    var rest = order.slice(n).sort(function (a, b) { return a - b; });
    var cell = filters.given >= 0 && filters.suggested >= 0;
    if (checks[id]) id += "-" + (checkOrder.length + 1); // the same draw again: a new record
    checks[id] = {
      id: id, decision: decision, rate: rate, size: n, state: "running", agreed: 0,
      cards: cardsOf.map(function (k) { return S.id[k]; }), rest: rest.map(function (k) { return S.id[k]; }),
      selection: selectionText(), given: cell ? filters.given : -1, suggested: cell ? filters.suggested : -1,
      filters: JSON.parse(JSON.stringify(filters)) // the grid returns to the selection afterwards
    };
    checkOrder.push(id);
    enterCheck(id);
    saveDecisions();
    status("Spot-check " + id + ": decide each of the " + n + " cards shown; \u201cFinish\u201d then applies \u201c" + BULK_TEXT[decision] +
      "\u201d to the other " + int(rest.length) + " only if all agree.");
  }

  function enterCheck(id) {
    active = id;
    checkCards = {};
    checkIndices(checks[id], "cards").forEach(function (k) { checkCards[k] = true; });
    $("bulk").hidden = false;
    $("bulk").classList.add("running"); // stays in view under the header while the cards are decided
    $("bulk").style.top = $("top").offsetHeight + "px";
    document.body.classList.add("checking");
    $("bulk-setup").hidden = true;
    $("bulk-running").hidden = false;
    Array.prototype.forEach.call(document.querySelectorAll(".controls select, .controls input, #clear-filters"), function (c) { c.disabled = true; });
    applyFilters();
  }

  function leaveCheck() {
    var f = checks[active].filters; // the check's selection (also after a reload during the check)
    active = null;
    checkCards = {};
    $("bulk").hidden = true;
    $("bulk").classList.remove("running");
    document.body.classList.remove("checking");
    Array.prototype.forEach.call(document.querySelectorAll(".controls select, .controls input, #clear-filters"), function (c) { c.disabled = false; });
    if (!f) { applyFilters(); return; }
    filters.view = f.view || "";
    filters.state = f.state || "";
    filters.threshold = typeof f.threshold === "number" ? f.threshold : D.threshold;
    $("filter-view").value = filters.view;
    $("filter-state").value = filters.state;
    $("threshold").value = String(filters.threshold);
    setFilters(f.given, f.suggested, f.pair);
  }

  function checkProgress(check) {
    var decided = 0, agreed = 0;
    checkIndices(check, "cards").forEach(function (k) {
      var v = agrees(check, k);
      if (v !== null) decided++;
      if (v) agreed++;
    });
    return { decided: decided, agreed: agreed };
  }

  function updateCheck() {
    if (!active) return;
    var check = checks[active], p = checkProgress(check);
    $("bulk-progress").textContent = "Spot-check " + check.id + " of " + check.selection + ": \u201c" + BULK_TEXT[check.decision] + "\u201d, " +
      check.size + " cards drawn from " + int(check.size + check.rest.length) + " undecided. " + p.decided + " of " + check.size +
      " decided, " + p.agreed + " agree" + (p.decided > p.agreed ? ", " + (p.decided - p.agreed) + " do not (the check fails)" : "") +
      ". If all " + check.size + " agree, at most " + Math.round(check.rate * 100) + "% of the other " + int(check.rest.length) +
      " are wrong with 95% confidence.";
    $("bulk-finish").disabled = p.decided < check.size;
  }

  function finishCheck() {
    var check = checks[active], p = checkProgress(check);
    if (p.decided < check.size) return;
    check.agreed = p.agreed;
    var rest = checkIndices(check, "rest").filter(function (k) { return !isDecided(k); });
    if (p.agreed < check.size) {
      check.state = "disagreed";
      check.applied = 0;
      leaveCheck();
      saveDecisions();
      status("Spot-check " + check.id + ": " + p.agreed + "/" + check.size + " agreed, " + (check.size - p.agreed) + " did not: nothing was applied to the other " +
        int(rest.length) + "; the " + check.size + " checked cards keep their own decisions.");
    } else {
      check.state = "agreed";
      leaveCheck();
      check.applied = change(rest.map(function (k) { return [k, check.decision, -1, "bulk:" + check.id]; }));
      saveDecisions();
      status("Spot-check " + check.id + ": " + check.size + "/" + check.size + " agreed: \u201c" + BULK_TEXT[check.decision] + "\u201d applied to the other " +
        int(check.applied) + " (source bulk:" + check.id + " in decisions.csv; Backspace undoes the whole bulk decision).");
    }
    updateChecks();
  }

  function stopCheck() {
    var check = checks[active];
    check.state = "stopped";
    check.agreed = checkProgress(check).agreed;
    leaveCheck();
    saveDecisions();
    updateChecks();
    status("Spot-check " + check.id + " stopped: nothing was applied; the checked cards keep their decisions.");
  }

  function checkResult(check) {
    if (check.state === "imported") return "imported with decisions (" + check.size + " cards, at most " + Math.round(check.rate * 100) + "% wrong)";
    if (check.state === "running") return "running";
    var text = check.agreed + "/" + check.size + " agreed";
    if (check.state === "stopped") return "stopped, " + text + " so far; nothing applied";
    if (check.state === "disagreed") return text + ": nothing applied";
    return text + ": applied to " + int(check.applied || 0) + (check.undone ? " (undone)" : "");
  }

  // The list of spot-checks, and each T cell's latest finished check.
  function updateChecks() {
    var list = $("checks");
    list.textContent = "";
    checkOrder.forEach(function (id) {
      var c = checks[id];
      list.appendChild(el("li", null, id + " \u00b7 " + (c.selection || "imported") + (c.decision ? " \u00b7 " + BULK_TEXT[c.decision] + ", at most " +
        Math.round(c.rate * 100) + "% wrong" : "") + " \u00b7 " + checkResult(c)));
    });
    $("checks-panel").hidden = !checkOrder.length;
    updateMatrixCounts();
  }

  function cellChecks() {
    var out = {};
    checkOrder.forEach(function (id) {
      var c = checks[id];
      if (c.given >= 0 && (c.state === "agreed" || c.state === "disagreed")) out[c.suggested + "," + c.given] = c;
    });
    return out;
  }

  // ---- filters -----------------------------------------------------------------------------
  // pair: [a, b], two classes mixed up either way (given one, suggested the other), or null.
  var filters = { given: -1, suggested: -1, pair: null, state: "", view: "", threshold: D.threshold };
  // Why each sample is listed: reasons of ISSUE_TYPES (older runs: label only).
  var REASONS = (S.reason || []).map(function (r) { return r ? r.split(";") : ["label"]; });
  function reasonsOf(k) { return REASONS[k] || ["label"]; }
  // Every listed member of each near-duplicate group, by group number.
  var GROUPS = {};
  (S.group || []).forEach(function (g, k) { if (g >= 0) (GROUPS[g] = GROUPS[g] || []).push(k); });
  var matches = [];
  var page = 0;
  var cards = []; // the cards of this page, in order
  var current = -1; // position in cards of the focused card

  // Whether sample k passes the view, decided/undecided and threshold filters (not the label ones).
  function passesBase(k, limit) {
    var reasons = reasonsOf(k);
    if (filters.view && reasons.indexOf(filters.view) < 0) return false;
    // The slider moves the flag boundary: it hides suspect labels it does not flag, never a
    // sample listed as a near-duplicate or an outlier (unless only suspect labels are viewed).
    var labelOnly = filters.view === "label" || (reasons.length === 1 && reasons[0] === "label");
    if (labelOnly && !keeps(SCORE[k], limit)) return false;
    if (filters.state === "decided" && !isDecided(k)) return false;
    if (filters.state === "undecided" && isDecided(k)) return false;
    return true;
  }

  function applyFilters() {
    var t0 = performance.now();
    var limit = EDGES[filters.threshold];
    var pair = filters.pair;
    var list = [];
    for (var k = 0; k < N && !active; k++) {
      if (filters.given >= 0 && S.given[k] !== filters.given) continue;
      if (filters.suggested >= 0 && S.suggested[k] !== filters.suggested) continue;
      if (pair && !(S.given[k] !== S.suggested[k] && pair.indexOf(S.given[k]) >= 0 && pair.indexOf(S.suggested[k]) >= 0)) continue;
      if (!passesBase(k, limit)) continue;
      list.push(k);
    }
    if (active) list = checkIndices(checks[active], "cards"); // a spot-check shows its cards only
    else if (filters.view === "duplicate_conflict") { // each group's members side by side, worst label first
      list.sort(function (a, b) { return (S.group[a] - S.group[b]) || (S.rank[a] - S.rank[b]); });
    } else if (filters.view === "outlier") { // the least like any class first
      list.sort(function (a, b) { return (S.outlier_score[b] - S.outlier_score[a]) || (S.rank[a] - S.rank[b]); });
    }
    matches = list;
    window.LABELAUDIT_TIMING.lastFilterMs = performance.now() - t0;
    page = 0;
    current = -1;
    render();
    updateMatrixCounts();
    updateThreshold();
    updateBulkButton();
    if (!$("bulk").hidden && !active) bulkStatement();
  }

  function setFilters(given, suggested, pair) {
    filters.given = given;
    filters.suggested = suggested;
    filters.pair = pair || null;
    $("pair-filter").hidden = !filters.pair;
    $("pair-filter-text").textContent = filters.pair ? "mixed up: " + CLASSES[filters.pair[0]] + " \u2194 " + CLASSES[filters.pair[1]] : "";
    $("filter-given").value = given >= 0 ? String(given) : "";
    $("filter-suggested").value = suggested >= 0 ? String(suggested) : "";
    applyFilters();
  }

  // ---- the grid ----------------------------------------------------------------------------
  function render() {
    var t0 = performance.now();
    var pages = Math.max(1, Math.ceil(matches.length / PAGE));
    page = Math.min(Math.max(page, 0), pages - 1);
    var start = page * PAGE;
    var end = Math.min(start + PAGE, matches.length);
    var grid = $("grid");
    var fragment = document.createDocumentFragment();
    cards = [];
    for (var p = start; p < end; p++) {
      var card = buildCard(matches[p]);
      cards.push(card);
      fragment.appendChild(card);
    }
    grid.textContent = "";
    grid.appendChild(fragment);
    $("empty").hidden = matches.length > 0;
    if (!matches.length) $("empty").textContent = emptyText();
    var info = matches.length
      ? "Samples " + int(start + 1) + "\u2013" + int(end) + " of " + int(matches.length) + " \u00b7 page " + int(page + 1) + " of " + int(pages)
      : "No samples \u00b7 page 1 of 1";
    Array.prototype.forEach.call(document.querySelectorAll(".page-info"), function (node) { node.textContent = info; });
    Array.prototype.forEach.call(document.querySelectorAll(".prev-page"), function (b) { b.disabled = page === 0; });
    Array.prototype.forEach.call(document.querySelectorAll(".next-page"), function (b) { b.disabled = page >= pages - 1; });
    if (current >= cards.length) current = cards.length - 1;
    if (current >= 0) markCurrent(current, false);
    window.LABELAUDIT_TIMING.lastRenderMs = performance.now() - t0;
  }

  // Why the grid is empty: nothing was found (for the whole run or for this view), or filters
  // hide what was found (naming them).
  function emptyText() {
    if (!N) return "None found: the scan listed no sample for review (no suspect or ambiguous label, near-duplicate or outlier).";
    var view = ISSUE_TYPES.filter(function (t) { return t.reason === filters.view; })[0];
    var inView = 0;
    for (var k = 0; k < N; k++) if (!filters.view || reasonsOf(k).indexOf(filters.view) >= 0) inView++;
    if (view && !inView) return "None found: the scan found no " + view.view + ".";
    var hiding = [];
    if (filters.given >= 0) hiding.push("given label " + CLASSES[filters.given]);
    if (filters.suggested >= 0) hiding.push("suggested label " + CLASSES[filters.suggested]);
    if (filters.pair) hiding.push("the pair " + CLASSES[filters.pair[0]] + " \u2194 " + CLASSES[filters.pair[1]]);
    if (filters.state) hiding.push("show " + filters.state);
    if (stricter(filters.threshold)) hiding.push("the flag threshold " + (ABOVE ? "raised" : "lowered") + " to " + thresholdText());
    return "No sample matches these filters: the " + int(inView) + " samples " + (view ? "of the view " + view.view : "listed") +
      " are hidden by " + (hiding.length ? hiding.join(", ") : "the filters") + ". \u201cClear filters\u201d shows them again.";
  }

  function goToPage(next, focus) {
    var pages = Math.max(1, Math.ceil(matches.length / PAGE));
    if (next < 0 || next >= pages) return false;
    page = next;
    current = -1;
    render();
    if (focus === "first") setCurrent(0, true);
    else if (focus === "last") setCurrent(cards.length - 1, true);
    else window.scrollTo(0, 0);
    return true;
  }

  // ---- the class picker --------------------------------------------------------------------
  // A list inside the card, under its image (never over it): type to narrow it, arrows to move,
  // Enter or a click to choose, Esc to close. Choosing records relabel to that class; Enter with
  // no class highlighted does nothing.
  function openPicker(card) {
    Array.prototype.forEach.call(document.querySelectorAll("#grid .picker:not([hidden])"), function (other) {
      if (other.closest(".card") !== card) { other.hidden = true; other.querySelector(".picker-list").textContent = ""; }
    }); // one list open at a time
    var picker = card.querySelector(".picker");
    picker.hidden = false;
    var input = picker.querySelector("input.picker-filter");
    input.value = "";
    fillPicker(card);
    input.focus({ preventScroll: true });
    card.scrollIntoView({ block: "nearest" });
  }

  function closePicker(card) {
    var picker = card.querySelector(".picker");
    if (picker.hidden) return;
    picker.hidden = true;
    picker.querySelector(".picker-list").textContent = "";
    card.focus({ preventScroll: true });
  }

  function fillPicker(card) {
    var index = +card.getAttribute("data-index");
    var picker = card.querySelector(".picker");
    var text = picker.querySelector("input.picker-filter").value.trim().toLowerCase();
    var list = picker.querySelector(".picker-list");
    list.textContent = "";
    var found = [];
    for (var c = 0; c < K; c++) if (!text || CLASSES[c].toLowerCase().indexOf(text) >= 0) found.push(c);
    found.slice(0, PICKER_MAX).forEach(function (c) {
      var prefix = c < 10 ? String((c + 1) % 10) + "  " : "";
      var tags = (c === S.given[index] ? " (given)" : "") + (c === S.suggested[index] ? " (suggested)" : "");
      var button = el("button", "pick-class", prefix + CLASSES[c] + tags);
      button.type = "button";
      button.tabIndex = -1;
      button.setAttribute("data-class", String(c));
      list.appendChild(button);
    });
    if (!found.length) list.appendChild(el("div", "key", "no class contains \u201c" + text + "\u201d"));
    else if (found.length > PICKER_MAX) list.appendChild(el("div", "key", int(found.length - PICKER_MAX) + " more: type to narrow"));
    highlight(card, found.length === 1 ? 0 : -1); // one match: Enter takes it
  }

  function highlight(card, position) {
    var buttons = card.querySelectorAll(".picker-list button.pick-class");
    position = Math.max(-1, Math.min(position, buttons.length - 1));
    Array.prototype.forEach.call(buttons, function (b, p) { b.classList.toggle("highlighted", p === position); });
    if (position >= 0) buttons[position].scrollIntoView({ block: "nearest" });
    card.querySelector(".picker").setAttribute("data-highlight", String(position));
  }

  function choosePicked(card, c, moveOn) {
    var index = +card.getAttribute("data-index");
    closePicker(card);
    decide(index, "relabel", c);
    if (moveOn) move(1);
  }

  function onPickerKey(event) {
    var card = event.target.closest(".card");
    var picker = card.querySelector(".picker");
    var at = +picker.getAttribute("data-highlight");
    var key = event.key;
    if (key === "ArrowDown") highlight(card, at + 1);
    else if (key === "ArrowUp") highlight(card, at - 1);
    else if (key === "Escape") closePicker(card);
    else if (key === "Enter") {
      var chosen = picker.querySelectorAll(".picker-list button.pick-class")[at];
      if (chosen) choosePicked(card, +chosen.getAttribute("data-class"), true);
    } else return; // typing: the input event narrows the list
    event.preventDefault();
    event.stopPropagation();
  }

  function buildCard(index) {
    var card = el("article", "card");
    card.tabIndex = -1;
    card.setAttribute("data-index", String(index));
    card.setAttribute("data-sample-id", S.id[index]);

    var top = el("div", "top");
    var box = el("div", "thumb-box");
    if (S.thumb[index]) {
      var img = document.createElement("img");
      img.alt = "";
      img.loading = "lazy";
      img.decoding = "async";
      img.width = 96;
      img.height = 96;
      img.src = "thumbs/" + index + ".jpg";
      img.addEventListener("load", function () { if (img.naturalWidth < 48 && img.naturalHeight < 48) img.classList.add("small"); });
      img.addEventListener("error", function () { box.textContent = ""; box.appendChild(el("div", "placeholder", "thumbnail missing")); });
      box.appendChild(img);
    } else {
      box.appendChild(el("div", "placeholder", "image could not be read"));
    }
    top.appendChild(box);

    var meta = el("div", "meta");
    var id = el("div", "sample-id", "#" + S.rank[index] + "  " + S.id[index]);
    id.title = S.path[index];
    meta.appendChild(id);
    var given = el("div");
    given.appendChild(el("span", "key", "given "));
    given.appendChild(el("span", "label given", CLASSES[S.given[index]]));
    given.appendChild(el("span", "key", " (" + fmt(S.confidence[index], 2) + ")"));
    meta.appendChild(given);
    var suggested = el("div");
    suggested.appendChild(el("span", "key", "suggested "));
    suggested.appendChild(el("span", "label suggested", CLASSES[S.suggested[index]]));
    suggested.appendChild(el("span", "key", " (" + fmt(S.suggested_confidence[index], 2) + ")"));
    meta.appendChild(suggested);
    meta.appendChild(S.p_label_wrong
      ? el("div", "key", "P(label wrong) " + probability(S.p_label_wrong[index]))
      : el("div", "key", "label quality " + fmt(S.label_quality[index], 3)));
    var reasons = reasonsOf(index);
    meta.appendChild(el("div", "reasons", reasons.map(function (r) { return REASON_TEXT[r] || r; }).join(" \u00b7 ")));
    if (reasons.indexOf("duplicate_conflict") >= 0 && S.partner_id[index]) {
      var copy = el("div", "duplicate");
      copy.appendChild(el("span", "key", "near-copy of "));
      copy.appendChild(el("span", "partner-id", S.partner_id[index]));
      var partner = S.partner[index];
      if (partner >= 0) {
        copy.appendChild(el("span", "key", " given "));
        copy.appendChild(el("span", "label partner-given", CLASSES[S.given[partner]]));
      }
      copy.appendChild(el("span", "key", " (similarity " + fmt(S.duplicate_similarity[index], 3) + ")"));
      meta.appendChild(copy);
    }
    if (reasons.indexOf("outlier") >= 0 && S.outlier_score[index] !== null) {
      meta.appendChild(el("div", "key outlier", "outlier score " + fmt(S.outlier_score[index], 3) + " (unlike any class)"));
    }
    top.appendChild(meta);
    card.appendChild(top);
    if (reasons.indexOf("duplicate_conflict") >= 0 && S.group[index] >= 0) {
      var group = el("div", "group-actions");
      [["keep-one", "Keep this, remove its copies", "Keep this image with its given label and remove the other images of its near-duplicate group"],
       ["remove-all", "Remove all copies", "Remove every image of this near-duplicate group"]].forEach(function (b) {
        var button = el("button", b[0], b[1]);
        button.type = "button";
        button.title = b[2];
        button.setAttribute("data-group-action", b[0]);
        group.appendChild(button);
      });
      card.appendChild(group);
    }

    var actions = el("div", "actions");
    [["accept", "Accept", "a", "Accept the suggested label (a)"], ["keep", "Keep", "g", "Keep the given label (g)"],
     ["remove", "Remove", "r", "Remove the sample from the dataset (r)"], ["unsure", "Unsure", "u", "Unsure (u)"]].forEach(function (b) {
      var button = el("button", b[0], b[1]);
      button.appendChild(el("span", "kbd", b[2]));
      button.type = "button";
      button.title = b[3];
      button.setAttribute("data-decision", b[0]);
      actions.appendChild(button);
    });
    var pick = el("button", "pick", "Class\u2026");
    pick.appendChild(el("span", "kbd", "c"));
    pick.type = "button";
    pick.title = "Relabel to a class chosen from a list (c, or keys 1-9 and 0)";
    pick.setAttribute("data-open-picker", "1");
    actions.appendChild(pick);
    var clear = el("button", "clear", "\u2715");
    clear.type = "button";
    clear.title = "Clear the decision (Backspace)";
    clear.setAttribute("data-decision", "");
    actions.appendChild(clear);
    card.appendChild(actions);
    var picker = el("div", "picker");
    picker.hidden = true;
    var filter = el("input", "picker-filter");
    filter.type = "text";
    filter.placeholder = "type to narrow, \u2191\u2193 then Enter, Esc closes";
    filter.setAttribute("aria-label", "Class to relabel to");
    picker.appendChild(filter);
    picker.appendChild(el("div", "picker-list"));
    card.appendChild(picker);

    var note = el("input", "note");
    note.type = "text";
    note.placeholder = "note (n)";
    note.maxLength = 2000;
    card.appendChild(note);
    card.appendChild(el("div", "state"));
    updateCard(card, index);
    return card;
  }

  function updateCard(card, index) {
    var d = decisions[index] || { decision: "", label: -1, note: "" };
    DECISIONS.forEach(function (name) { card.classList.toggle("d-" + name, d.decision === name); });
    Array.prototype.forEach.call(card.querySelectorAll("button[data-decision]"), function (b) {
      b.classList.toggle("on", !!d.decision && b.getAttribute("data-decision") === d.decision);
    });
    var pick = card.querySelector("button.pick");
    pick.classList.toggle("on", d.decision === "relabel");
    pick.firstChild.textContent = d.decision === "relabel" ? CLASSES[d.label] : "Class\u2026";
    var note = card.querySelector("input.note");
    if (document.activeElement !== note) note.value = d.note || "";
    var state = card.querySelector(".state");
    state.classList.toggle("decided", !!d.decision);
    state.textContent = describe(index);
  }

  function refreshCard(index) {
    for (var p = 0; p < cards.length; p++) {
      if (+cards[p].getAttribute("data-index") === index) updateCard(cards[p], index);
    }
  }

  function markCurrent(position, scroll) {
    Array.prototype.forEach.call(document.querySelectorAll(".card.current"), function (c) { c.classList.remove("current"); });
    var card = cards[position];
    if (!card) return;
    card.classList.add("current");
    if (scroll) card.scrollIntoView({ block: "nearest" });
  }

  function setCurrent(position, focus) {
    if (position < 0 || position >= cards.length) return;
    current = position;
    markCurrent(position, focus);
    if (focus) cards[position].focus({ preventScroll: true });
  }

  function move(step) {
    if (!cards.length) return;
    if (current < 0) { setCurrent(0, true); return; }
    var next = current + step;
    if (next >= cards.length) { if (!goToPage(page + 1, "first")) setCurrent(cards.length - 1, true); return; }
    if (next < 0) { if (!goToPage(page - 1, "last")) setCurrent(0, true); return; }
    setCurrent(next, true);
  }

  function currentIndex() { return current >= 0 && cards[current] ? +cards[current].getAttribute("data-index") : -1; }

  function updateCounts() {
    var decided = 0;
    for (var k = 0; k < N; k++) if (isDecided(k)) decided++;
    $("decided-count").textContent = int(decided) + " decided \u00b7 " + int(N - decided) + " undecided";
    updateCheck();
    if (matches) updateBulkButton();
  }

  // ---- keys --------------------------------------------------------------------------------
  function onKey(event) {
    var target = event.target;
    var tag = target && target.tagName;
    var typing = tag === "INPUT" && target.type !== "range" && target.type !== "button" && target.type !== "file" || tag === "TEXTAREA";
    if ((event.ctrlKey || event.metaKey) && !event.altKey && !event.shiftKey && event.key.toLowerCase() === "z" && !typing) {
      event.preventDefault(); // outside a text field Ctrl+Z undoes the last decision
      undo();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var card = target && target.closest ? target.closest(".card") : null;
    if (tag === "INPUT" && target.type !== "range" && target.type !== "button" || tag === "TEXTAREA") {
      if (card && (event.key === "Enter" || event.key === "Escape")) { event.preventDefault(); target.blur(); card.focus({ preventScroll: true }); }
      return;
    }
    if (tag === "SELECT" || tag === "INPUT") {
      if (event.key === "Escape") { target.blur(); if (card) card.focus({ preventScroll: true }); }
      return;
    }
    var key = event.key;
    var handled = true;
    var index = currentIndex();
    if (key === "j" || key === "ArrowRight" || key === "ArrowDown") move(1);
    else if (key === "k" || key === "ArrowLeft" || key === "ArrowUp") move(-1);
    else if (key === "]") goToPage(page + 1, "first");
    else if (key === "[") goToPage(page - 1, "first");
    else if (key === "Backspace") undo();
    else if (index < 0) {
      handled = key in KEY_DECISION || /^[0-9]$/.test(key) || key === "c" || key === "n";
      if (handled) move(1); // nothing chosen yet: choose the first card
    } else if (key in KEY_DECISION) { decide(index, KEY_DECISION[key]); move(1); }
    else if (/^[0-9]$/.test(key)) {
      var c = key === "0" ? 9 : +key - 1;
      if (c < K) { decide(index, "relabel", c); move(1); }
    } else if (key === "Delete") decide(index, "");
    else if (key === "c") openPicker(cards[current]);
    else if (key === "n") cards[current].querySelector("input.note").focus();
    else handled = false;
    if (handled) event.preventDefault();
  }

  // ---- transition matrix -------------------------------------------------------------------
  var matrixCells = [];

  // counts[i][j] / left[i][j]: the samples (undecided ones) that the view, decided/undecided and
  // threshold filters keep, with suggested label i and given label j. The label filters are left
  // out: the matrix and the mixed-up list are where they are chosen.
  function filteredCounts() {
    var counts = [], left = [];
    for (i = 0; i < K; i++) { counts.push(new Array(K).fill(0)); left.push(new Array(K).fill(0)); }
    var limit = EDGES[filters.threshold];
    for (var k = 0; k < N; k++) {
      if (!passesBase(k, limit)) continue;
      counts[S.suggested[k]][S.given[k]]++;
      if (!isDecided(k)) left[S.suggested[k]][S.given[k]]++;
    }
    return { counts: counts, left: left };
  }

  function countText(total, left) {
    if (!total) return "";
    return left === total ? "(" + int(total) + ")" : "(" + int(left) + "/" + int(total) + ")";
  }

  function updateMatrixCounts() {
    var c = filteredCounts();
    var T = D.transition_matrix;
    var checked = cellChecks();
    if (K > MATRIX_MAX_CLASSES) fillPairList(T, c);
    else {
      matrixCells.forEach(function (b) {
        var t = +b.getAttribute("data-true"), g = +b.getAttribute("data-given");
        var check = checked[t + "," + g];
        b.querySelector(".count").textContent = countText(c.counts[t][g], c.left[t][g]);
        b.querySelector(".check").textContent = check ? check.agreed + "/" + check.size + " agreed" : "";
        b.classList.toggle("checked", !!check);
        b.title = "true " + CLASSES[t] + ", given " + CLASSES[g] + ": T = " + fmt(T[t][g], 4) + "; " + int(c.counts[t][g]) +
          " samples under the current filters given " + CLASSES[g] + " with suggested label " + CLASSES[t] + ", " +
          int(c.left[t][g]) + " undecided" + (check ? "; spot-check " + check.id + ": " + checkResult(check) : "");
      });
    }
    fillMixedUp(c);
    markMatrixCell();
  }

  // "Classes most often mixed up": the pairs with the most samples given one and suggested the
  // other under the current filters, as buttons that filter the grid to the pair.
  function fillMixedUp(c) {
    var box = $("overlap");
    box.textContent = "";
    var groups = {}; // near-duplicate groups across two classes (summary.json's class_overlap)
    (D.class_overlap || []).forEach(function (o) {
      var a = classIndex[o.classes[0]], b = classIndex[o.classes[1]];
      if (a !== undefined && b !== undefined && o.duplicate_groups_across) groups[Math.min(a, b) + "," + Math.max(a, b)] = o.duplicate_groups_across;
    });
    var pairs = [];
    for (i = 0; i < K; i++) for (j = i + 1; j < K; j++) {
      var total = c.counts[i][j] + c.counts[j][i];
      var dup = groups[i + "," + j] || 0;
      if (total || dup) pairs.push([total, c.left[i][j] + c.left[j][i], i, j, dup]);
    }
    pairs.sort(function (a, b) { return b[0] - a[0] || b[4] - a[4] || a[2] - b[2] || a[3] - b[3]; });
    pairs.slice(0, 10).forEach(function (p) {
      var li = el("li");
      var button = el("button", "pair", CLASSES[p[2]] + " \u2194 " + CLASSES[p[3]]);
      button.type = "button";
      button.setAttribute("data-pair", p[2] + "," + p[3]);
      var selected = filters.pair && filters.pair[0] === p[2] && filters.pair[1] === p[3];
      button.classList.toggle("selected", !!selected);
      li.appendChild(button);
      li.appendChild(el("span", "key", " " + int(p[0]) + " samples between them" + (p[1] !== p[0] ? ", " + int(p[1]) + " undecided" : "") +
        (p[4] ? "; " + int(p[4]) + " near-duplicate group" + (p[4] === 1 ? "" : "s") + " across them (in the scan)" : "")));
      box.appendChild(li);
    });
    $("overlap-empty").hidden = pairs.length > 0;
    $("overlap-empty").textContent = N ? "None found: no sample under these filters has a suggested label other than its given one." : "None found: the scan listed no sample.";
  }

  function buildMatrix() {
    var T = D.transition_matrix;
    var box = $("matrix");
    if (K > MATRIX_MAX_CLASSES) { buildPairList(box); return; }
    var table = el("table", "matrix");
    var head = el("thead");
    var row = el("tr");
    row.appendChild(el("th", "corner", "true \u2193  given \u2192"));
    for (j = 0; j < K; j++) { var th = el("th", "given", CLASSES[j]); th.title = CLASSES[j]; row.appendChild(th); }
    head.appendChild(row);
    table.appendChild(head);
    var body = el("tbody");
    for (i = 0; i < K; i++) {
      row = el("tr");
      var rowHead = el("th", "true", CLASSES[i]);
      rowHead.title = CLASSES[i];
      row.appendChild(rowHead);
      for (j = 0; j < K; j++) {
        var value = T[i][j];
        var cell = el("td", i === j ? "diagonal" : "");
        var button = el("button", null, fmt(value, 2));
        button.type = "button";
        button.setAttribute("data-true", String(i));
        button.setAttribute("data-given", String(j));
        button.appendChild(el("span", "count"));
        button.appendChild(el("span", "check"));
        var strength = Math.sqrt(Math.max(0, Math.min(1, value || 0)));
        button.style.background = "hsl(212, 70%, " + (98 - 62 * strength).toFixed(1) + "%)";
        button.style.color = strength > 0.55 ? "#fff" : "#1d232a";
        cell.appendChild(button);
        row.appendChild(cell);
        matrixCells.push(button);
      }
      body.appendChild(row);
    }
    table.appendChild(body);
    box.appendChild(table);
    table.addEventListener("click", function (event) {
      var b = event.target.closest("button[data-true]");
      if (b) setFilters(+b.getAttribute("data-given"), +b.getAttribute("data-true"));
    });
  }

  function buildPairList(box) {
    box.appendChild(el("p", "key pairs-caption"));
    var list = el("div", "pairs");
    box.appendChild(list);
    list.addEventListener("click", function (event) {
      var b = event.target.closest("button[data-true]");
      if (b) setFilters(+b.getAttribute("data-given"), +b.getAttribute("data-true"));
    });
  }

  function fillPairList(T, c) {
    var pairs = [];
    for (i = 0; i < K; i++) for (j = 0; j < K; j++) if (c.counts[i][j]) pairs.push([c.counts[i][j], i, j, c.left[i][j]]);
    pairs.sort(function (a, b) { return b[0] - a[0]; });
    document.querySelector("#matrix .pairs-caption").textContent = K + " classes: the matrix is too large to draw; the " +
      Math.min(200, pairs.length) + " most frequent confusions under the current filters (given \u2192 suggested) filter the grid.";
    var list = document.querySelector("#matrix .pairs");
    list.textContent = "";
    matrixCells = [];
    pairs.slice(0, 200).forEach(function (p) {
      var button = el("button", null, CLASSES[p[2]] + " \u2192 " + CLASSES[p[1]] + " " + countText(p[0], p[3]) + " T = " + fmt(T[p[1]][p[2]], 3));
      button.type = "button";
      button.setAttribute("data-true", String(p[1]));
      button.setAttribute("data-given", String(p[2]));
      list.appendChild(button);
      matrixCells.push(button);
    });
  }

  function markMatrixCell() {
    matrixCells.forEach(function (b) {
      b.classList.toggle("selected", +b.getAttribute("data-given") === filters.given && +b.getAttribute("data-true") === filters.suggested);
    });
  }

  // ---- threshold slider --------------------------------------------------------------------
  function quality(x) { // a label-quality value, readable from 0.000012 to 1
    if (x === 0) return "0";
    if (x >= 0.1) return x.toFixed(3);
    return x.toPrecision(2).replace(/e-(\d)$/, "e-0$1");
  }
  // A probability readable at both ends: 0.0012, 0.500, 0.9988, 0.999988, then 1 − 2.0e-7.
  function probability(x) {
    if (x === null || x === undefined) return "-";
    if (x <= 0 || x >= 1) return String(Math.round(x));
    if (x < 0.01) return x.toPrecision(2);
    if (x <= 0.99) return x.toFixed(3);
    var rest = 1 - x;
    if (rest >= 1e-5) return x.toFixed(Math.ceil(-Math.log10(rest)) + 1);
    return "1 \u2212 " + rest.toExponential(1);
  }
  function sliderText(x) { return ABOVE ? probability(x) : quality(x); }
  function thresholdText() { return sliderText(EDGES[filters.threshold]); }

  // The first slider position whose edge lies above x.
  function positionOf(x) {
    var lo = 0, hi = BINS;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (EDGES[mid] > x) hi = mid; else lo = mid + 1; }
    return lo;
  }
  // The step of the slider, [EDGES[p], EDGES[p + 1]), that holds x (label quality), or
  // (EDGES[p], EDGES[p + 1]] (P(label wrong)).
  function stepOf(x) {
    if (!ABOVE) return positionOf(x) - 1;
    var lo = 0, hi = BINS;
    while (lo < hi) { var mid = (lo + hi) >> 1; if (EDGES[mid] >= x) hi = mid; else lo = mid + 1; }
    return lo - 1;
  }
  // Whether a slider value flags more samples than the start (then the grid cannot show the
  // extra ones: it lists the scan's flagged samples only), or fewer.
  function looser(value) { return ABOVE ? value < D.threshold : value > D.threshold; }
  function stricter(value) { return ABOVE ? value > D.threshold : value < D.threshold; }

  function updateThreshold() {
    var value = filters.threshold;
    var count = D.histogram[value];
    var limit = EDGES[value];
    var kept = 0, suspect = 0;
    for (var k = 0; k < N; k++) {
      var reasons = reasonsOf(k);
      if (!(reasons.length === 1 && reasons[0] === "label")) continue;
      suspect++;
      if (keeps(SCORE[k], limit)) kept++;
    }
    $("threshold-value").textContent = thresholdText();
    var text = SLIDER_NAME + (ABOVE ? " > " : " < ") + thresholdText() + ": " + int(count) + " of " + int(D.num_samples) +
      " samples (" + pct(count / Math.max(1, D.num_samples)) + ") would be flagged; the scan flagged " + int(D.num_flagged) +
      ". The grid keeps " + int(kept) + " of the " + int(suspect) + " listed suspect labels.";
    if (looser(value)) text += " The grid lists the scan's flagged samples only.";
    $("threshold-count").textContent = text;
    Array.prototype.forEach.call(document.querySelectorAll("#threshold-hist .bar"), function (bar) {
      var flagged = ABOVE ? +bar.getAttribute("data-to") > value : +bar.getAttribute("data-from") < value;
      bar.classList.toggle("flagged", flagged); // holds samples the threshold flags
    });
  }

  // A histogram of the slider's column under the slider, on its scale: one bar per
  // BINS / HIST_BARS positions, all samples (light) with the listed ones (dark) inside; bar
  // heights on a log scale of the counts.
  function buildHistogram() {
    var box = $("threshold-hist");
    var listed = new Array(HIST_BARS).fill(0);
    var width = BINS / HIST_BARS;
    for (var k = 0; k < N; k++) {
      var q = SCORE[k];
      if (!(q >= 0)) continue;
      listed[Math.min(HIST_BARS - 1, Math.max(0, Math.floor(stepOf(q) / width)))]++;
    }
    var all = [], most = 1;
    for (var b = 0; b < HIST_BARS; b++) {
      var from = Math.round(b * width), to = Math.round((b + 1) * width);
      all.push([from, to, Math.abs(D.histogram[to] - D.histogram[from])]);
      most = Math.max(most, all[b][2], listed[b]);
    }
    all.forEach(function (a, b) {
      var bar = el("div", "bar");
      bar.setAttribute("data-from", String(a[0]));
      bar.setAttribute("data-to", String(a[1]));
      bar.setAttribute("data-count", String(a[2]));
      bar.setAttribute("data-listed", String(listed[b]));
      bar.title = SLIDER_NAME + " " + sliderText(EDGES[a[0]]) + " to " + sliderText(EDGES[a[1]]) + ": " + int(a[2]) + " samples, " +
        int(listed[b]) + " of them listed";
      var total = el("div", "all");
      total.style.height = (100 * Math.log1p(a[2]) / Math.log1p(most)).toFixed(1) + "%"; // log heights: the
      var part = el("div", "listed"); // clean samples near 1 would flatten the flagged ones
      part.style.height = (100 * Math.log1p(listed[b]) / Math.log1p(most)).toFixed(1) + "%";
      bar.appendChild(total);
      bar.appendChild(part);
      box.appendChild(bar);
    });
  }

  // ---- page set-up -------------------------------------------------------------------------
  function setUp() {
    window.LABELAUDIT_TIMING = { scriptStartMs: started };
    document.title = "labelaudit review: " + D.run.name;
    $("run-name").textContent = D.run.name;
    var summary = int(D.num_samples) + " samples \u00b7 " + int(D.num_flagged) + " flagged (" +
      pct(D.num_flagged / Math.max(1, D.num_samples)) + ") \u00b7 estimated noise rate " + pct(D.run.estimated_noise_rate) +
      " \u00b7 method " + (D.run.method || "-") + " \u00b7 source " + D.run.source;
    if (N < D.num_flagged) summary += " \u00b7 this page lists the " + int(N) + " most suspect (labelaudit review --limit)";
    $("run-summary").textContent = summary;

    ["filter-given", "filter-suggested"].forEach(function (id) {
      var select = $(id);
      for (var c = 0; c < K; c++) {
        var option = el("option", null, CLASSES[c]);
        option.value = String(c);
        select.appendChild(option);
      }
    });
    // After a choice the list lets go of the focus, so that the review keys act on the grid again
    // (a focused list would take "j" or "a" as the first letter of an option).
    // A label filter and a mixed-up pair exclude each other: choosing one clears the other.
    $("filter-given").addEventListener("change", function (e) { e.target.blur(); setFilters(e.target.value === "" ? -1 : +e.target.value, filters.pair ? -1 : filters.suggested, null); });
    $("filter-suggested").addEventListener("change", function (e) { e.target.blur(); setFilters(filters.pair ? -1 : filters.given, e.target.value === "" ? -1 : +e.target.value, null); });
    $("filter-state").addEventListener("change", function (e) { filters.state = e.target.value; e.target.blur(); applyFilters(); });
    $("filter-view").addEventListener("change", function (e) { filters.view = e.target.value; e.target.blur(); applyFilters(); });
    var counts = {};
    for (var r = 0; r < N; r++) reasonsOf(r).forEach(function (name) { counts[name] = (counts[name] || 0) + 1; });
    ISSUE_TYPES.forEach(function (t) { // one view per issue type, with how many it lists
      var option = el("option", null, t.view + " (" + int(counts[t.reason] || 0) + ")");
      option.value = t.reason;
      $("filter-view").appendChild(option);
    });
    $("overlap").addEventListener("click", function (event) {
      var b = event.target.closest("button[data-pair]");
      if (!b) return;
      var pair = b.getAttribute("data-pair").split(",").map(Number);
      setFilters(-1, -1, pair);
    });
    $("pair-filter-clear").addEventListener("click", function () { setFilters(filters.given, filters.suggested, null); });
    $("clear-filters").addEventListener("click", function () {
      filters.view = "";
      $("filter-view").value = "";
      filters.state = "";
      $("filter-state").value = "";
      filters.threshold = D.threshold;
      $("threshold").value = String(D.threshold);
      setFilters(-1, -1, null);
    });

    var slider = $("threshold");
    $("threshold-name").textContent = "Flag threshold on " + SLIDER_NAME + (ABOVE ? " (logit scale), flagged above" : " (log scale), flagged below");
    slider.max = String(BINS);
    slider.value = String(D.threshold);
    buildHistogram();
    var pending = false;
    slider.addEventListener("input", function () {
      filters.threshold = +slider.value;
      updateThreshold();
      if (pending) return;
      pending = true;
      requestAnimationFrame(function () { pending = false; applyFilters(); });
    });
    updateThreshold();

    Array.prototype.forEach.call(document.querySelectorAll(".prev-page"), function (b) { b.addEventListener("click", function () { goToPage(page - 1); }); });
    Array.prototype.forEach.call(document.querySelectorAll(".next-page"), function (b) { b.addEventListener("click", function () { goToPage(page + 1); }); });
    $("export").addEventListener("click", exportCsv);
    $("bulk-open").addEventListener("click", openBulk);
    $("bulk-decision").addEventListener("change", bulkStatement);
    $("bulk-rate").addEventListener("change", bulkStatement);
    $("bulk-start").addEventListener("click", startCheck);
    $("bulk-cancel").addEventListener("click", function () { $("bulk").hidden = true; });
    $("bulk-finish").addEventListener("click", finishCheck);
    $("bulk-stop").addEventListener("click", stopCheck);
    $("import").addEventListener("change", function (e) {
      if (e.target.files && e.target.files[0]) importCsv(e.target.files[0]);
      e.target.value = ""; // the same file can be imported again
      e.target.blur();
    });

    var grid = $("grid");
    grid.addEventListener("click", function (event) {
      var card = event.target.closest(".card");
      if (!card) return;
      var position = cards.indexOf(card);
      var button = event.target.closest("button[data-decision]");
      var groupButton = event.target.closest("button[data-group-action]");
      var opener = event.target.closest("button[data-open-picker]");
      var picked = event.target.closest("button[data-class]");
      var field = event.target.closest("select, input, .picker");
      setCurrent(position, !button && !field && !groupButton && !opener);
      if (button) decide(+card.getAttribute("data-index"), button.getAttribute("data-decision"));
      if (groupButton) decideGroup(+card.getAttribute("data-index"), groupButton.getAttribute("data-group-action"));
      if (opener) { if (card.querySelector(".picker").hidden) openPicker(card); else closePicker(card); }
      if (picked) choosePicked(card, +picked.getAttribute("data-class"), false);
    });
    grid.addEventListener("focusin", function (event) {
      var card = event.target.closest(".card");
      if (card) { current = cards.indexOf(card); markCurrent(current, false); }
    });
    grid.addEventListener("keydown", function (event) {
      if (event.target.matches("input.picker-filter")) onPickerKey(event);
    });
    grid.addEventListener("input", function (event) {
      if (event.target.matches("input.note")) setNote(+event.target.closest(".card").getAttribute("data-index"), event.target.value);
      if (event.target.matches("input.picker-filter")) fillPicker(event.target.closest(".card"));
    });
    document.addEventListener("keydown", onKey);

    if (D.plots && D.plots.length) {
      var plots = $("plots");
      D.plots.forEach(function (name) {
        var figure = el("figure");
        var img = document.createElement("img");
        img.alt = name;
        img.src = "plots/" + name;
        figure.appendChild(img);
        figure.appendChild(el("figcaption", null, name));
        plots.appendChild(figure);
      });
      $("plots-panel").hidden = false;
    }
    if (D.num_unreadable) {
      $("unreadable-summary").textContent = int(D.num_unreadable) + " images could not be read: their cards show a " +
        "placeholder (all are listed in unreadable.csv)";
      var list = $("unreadable");
      D.unreadable.forEach(function (row) {
        list.appendChild(el("li", null, row.sample_id + " \u2014 " + row.path + ": " + row.reason + (row.detail ? " (" + row.detail + ")" : "")));
      });
      $("unreadable-panel").hidden = false;
    }

    loadDecisions();
    buildMatrix();
    updateCounts();
    if (active) enterCheck(active); // a spot-check running when the page was closed
    else applyFilters();
    updateChecks();
    window.LABELAUDIT_TIMING.readyMs = performance.now();
    window.LABELAUDIT_TIMING.setUpMs = performance.now() - started;
    document.body.setAttribute("data-ready", "1");
  }

  setUp();
})();
