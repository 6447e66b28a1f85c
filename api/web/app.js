// ProductCat web page: classify a product with its explanation, and work through the review queue.
// No framework and no build step. Every text that comes from a user or from the API is written with
// textContent (never innerHTML), so a product title can never become markup.
"use strict";

const KEY_STORAGE = "productcat.apiKey";
const REVIEW_PAGE_SIZE = 10;
const MAX_LABEL_MATCHES = 30;
const IMAGE_FAMILIES = new Set(["image", "fusion"]);

const state = {labels: [], labelPaths: {}, reviewOffset: 0, reviewTotal: 0, pickerCount: 0};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("aria-") || name.startsWith("data-") || name === "role") node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function percent(probability) {
  return `${(100 * probability).toFixed(1)} %`;
}

// ---- API key and calls ---------------------------------------------------------------------------

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function showKeyState() {
  const key = apiKey();
  // Only the key's public prefix is ever shown (pc_<prefix>_<secret>).
  $("key-state").textContent = key ? `Key set (${key.split("_").slice(0, 2).join("_")}_…).` : "No key set.";
}

// `openFallback`: a key that lacks the route's scope is refused even where the route is open to
// anyone, so a read call (model, labels) refused for its scope is tried once more without the key.
async function api(path, {method = "GET", body, openFallback = false, anonymous = false} = {}) {
  const headers = {Accept: "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = anonymous ? "" : apiKey();
  if (key) headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (error) {
    return {ok: false, status: 0, data: null, headers: new Headers()};
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    data = null;
  }
  const result = {ok: response.ok, status: response.status, data, headers: response.headers};
  if (openFallback && key && result.status === 403 && /lacks the scope/.test(detailText(data))) {
    const open = await api(path, {method, body, anonymous: true});
    if (open.ok) return open;
  }
  return result;
}

function fieldName(loc) {
  const parts = (loc || []).filter((part) => part !== "body" && part !== "query");
  return parts.length ? parts.join(".") : "request";
}

function detailText(data) {
  const detail = data && data.detail;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    const lines = detail.map((error) => `${fieldName(error.loc)}: ${error.msg}`);
    if (data.omitted) lines.push(`and ${data.omitted} more`);
    return lines.join("; ");
  }
  return "";
}

// A refused call in words a person can act on; `scope` is what the route needs from a key.
function problem(result, scope) {
  const detail = detailText(result.data);
  switch (result.status) {
    case 0:
      return "The API did not answer (is it running?).";
    case 401:
      return `This needs an API key with the scope '${scope}': type one in the API key box above.`;
    case 403:
      if (/lacks the scope/.test(detail)) return `This key lacks the scope '${scope}' (${detail}).`;
      return `Key not recognised: ${detail || "the API refused it"}. Check the key in the API key box above.`;
    case 429: {
      const retry = result.headers.get("Retry-After");
      return `Too many requests${detail ? ` (${detail})` : ""}${retry ? `: retry in ${retry} s` : ""}.`;
    }
    case 400:
    case 413:
    case 422:
      return `The API refused the input: ${detail || `status ${result.status}`}.`;
    case 503:
      return `The service cannot answer now: ${detail || "no model is loaded"}.`;
    default:
      return `The API answered ${result.status}${detail ? `: ${detail}` : ""}.`;
  }
}

function setStatus(node, message, kind = "info") {
  node.textContent = message;
  node.dataset.kind = kind;
}

// ---- Header: model and labels ----------------------------------------------------------------------

async function loadModel() {
  const result = await api("model", {openFallback: true});
  const info = $("model-info");
  if (!result.ok) {
    info.textContent = `Model: ${problem(result, "read")}`;
    return;
  }
  const model = result.data;
  const family = (model.card && model.card.family) || "";
  info.textContent = model.version
    ? `Model: ${model.name} version ${model.version}${family ? ` (${family})` : ""}`
    : `Model: ${model.name}: no version loaded`;
  $("photo-field").hidden = !IMAGE_FAMILIES.has(family);
  if (!state.labels.length && Array.isArray(model.labels)) state.labels = model.labels.slice().sort();
}

async function loadLabels() {
  const result = await api("labels", {openFallback: true});
  if (result.ok && result.data && Array.isArray(result.data.labels)) {
    state.labels = result.data.labels.slice().sort();
    state.labelPaths = result.data.label_paths || {};
  }
}

function labelPath(label) {
  const path = state.labelPaths[label];
  return Array.isArray(path) && path.length ? path.join(" › ") : "";
}

// ---- Tabs ------------------------------------------------------------------------------------------

function tabs() {
  return Array.from(document.querySelectorAll('[role="tab"]'));
}

function selectTab(tab, {focus = false} = {}) {
  for (const other of tabs()) {
    const selected = other === tab;
    other.setAttribute("aria-selected", String(selected));
    other.tabIndex = selected ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !selected;
  }
  if (focus) tab.focus();
  if (tab.id === "tab-review") loadReview();
}

function onTabKey(event) {
  const all = tabs();
  const index = all.indexOf(event.currentTarget);
  const moves = {ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: all.length - 1};
  if (!(event.key in moves)) return;
  event.preventDefault();
  selectTab(all[(moves[event.key] + all.length) % all.length], {focus: true});
}

// ---- Classify --------------------------------------------------------------------------------------

function productFromForm() {
  const product = {};
  for (const [field, id] of [["title", "product-title"], ["description", "product-description"],
                             ["brand", "product-brand"], ["image", "product-image"]]) {
    const input = $(id);
    const value = input.value.trim();
    if (value && !input.closest("[hidden]")) product[field] = value;
  }
  return product;
}

function bar(label, probability, {current = false} = {}) {
  const fill = el("span", {class: "fill"});
  fill.style.setProperty("--p", String(Math.max(0, Math.min(1, probability))));
  const path = labelPath(label);
  return el("li", {class: current ? "current" : ""},
    el("span", {class: "name", text: label}),
    el("span", {class: "track", "aria-hidden": "true"}, fill),
    el("span", {class: "pct", text: percent(probability)}),
    path ? el("span", {class: "subpath", text: path}) : null);
}

async function classify(event) {
  event.preventDefault();
  const status = $("classify-status");
  const product = productFromForm();
  if (!product.title && !product.description) {
    setStatus(status, "Type a title or a description first.", "error");
    $("product-title").focus();
    return;
  }
  const topK = $("top-k").value;
  const button = $("classify-submit");
  button.disabled = true;
  setStatus(status, "Classifying…");
  const result = await api(`predict?explain=true&top_k=${encodeURIComponent(topK)}`, {method: "POST", body: product});
  button.disabled = false;
  if (!result.ok) {
    setStatus(status, problem(result, "predict"), "error");
    $("result").hidden = true;
    return;
  }
  const prediction = result.data.predictions[0];
  const model = result.data.model;
  setStatus(status, prediction.needs_review
    ? "The model is not sure: the product went to the review queue."
    : `${prediction.label} (${percent(prediction.probability)}), answered by ${model.name} version ${model.version}.`);
  showPrediction(prediction, model);
}

function showPrediction(prediction, model) {
  const banner = $("review-banner");
  banner.hidden = !prediction.needs_review;
  if (prediction.needs_review) {
    banner.replaceChildren(
      el("strong", {text: "Needs review. "}),
      `The model is not sure enough to answer (top probability ${percent(prediction.probability)}), so it gives no `
      + "category. ",
      prediction.review_id != null
        ? `The product is in the review queue as item #${prediction.review_id}; a person will pick its category.`
        : "A person will pick its category.");
    banner.setAttribute("role", "alert");
  }
  const top = prediction.top_k[0];
  $("answer").textContent = prediction.needs_review
    ? "No category yet: needs review"
    : `${prediction.label} (${percent(prediction.probability)})`;
  const path = prediction.label_path || [];
  $("label-path").textContent = path.length ? `Path: ${path.join(" › ")}` : "";
  $("label-path").hidden = !path.length;
  $("low-confidence").hidden = !(prediction.low_confidence && !prediction.needs_review);
  const current = prediction.needs_review ? null : prediction.label;
  $("top-k-list").replaceChildren(...prediction.top_k.map(
    (item) => bar(item.label, item.probability, {current: item.label === current})));
  showExplanation(prediction.explanation, top && top.label);
  $("request-id").textContent = `Request id ${prediction.request_id} · model ${model.name} version ${model.version}`;
  $("result").hidden = false;
}

function highlighted(text, spans, scale, label) {
  const out = el("p", {class: "explained-text"});
  let at = 0;
  const ordered = (spans || []).filter((span) => span.end > span.start).sort((a, b) => a.start - b.start);
  for (const span of ordered) {
    if (span.start < at || span.end > text.length) continue; // overlapping or out of range: left plain
    out.append(text.slice(at, span.start));
    const weight = Number(span.weight) || 0;
    const mark = el("mark", {class: weight >= 0 ? "towards" : "away", text: text.slice(span.start, span.end)});
    mark.style.setProperty("--w", String(scale ? Math.min(1, Math.abs(weight) / scale) : 0));
    mark.title = `${weight >= 0 ? "+" : ""}${weight.toFixed(4)}: ${weight >= 0 ? "towards" : "away from"} ${label}`;
    mark.dataset.weight = String(weight);
    out.append(mark);
    at = span.end;
  }
  out.append(text.slice(at));
  return out;
}

// Photo families: how much of the decision came from the text and how much from the photo.
function modalityText(shares) {
  if (!shares) return "";
  const percent = (name) => `${Math.round(100 * (Number(shares[name]) || 0))} %`;
  return ` The decision came ${percent("text")} from the text and ${percent("image")} from the photo.`;
}

function showExplanation(explanation, fallbackLabel) {
  const box = $("explanation");
  box.hidden = !explanation;
  if (!explanation) return;
  const label = explanation.label || fallbackLabel;
  const fields = (explanation.fields || []).filter((field) => field.text);
  const weights = fields.flatMap((field) => (field.spans || []).map((span) => Math.abs(Number(span.weight) || 0)));
  const scale = Math.max(0, ...weights);
  $("explanation-about").textContent = `Explaining “${label}” (${explanation.method}). Words in green push `
    + `towards it, words in red push away from it; the strongest colour is a weight of ${scale.toFixed(3)}.`
    + modalityText(explanation.modality_shares);
  $("explained-fields").replaceChildren(...fields.map((field) => el("div", {class: "explained-field"},
    el("h4", {text: field.field}), highlighted(field.text, field.spans, scale, label))));
  $("top-features").replaceChildren(...(explanation.top_features || []).map((feature) => {
    const weight = Number(feature.weight) || 0;
    return el("li", {class: weight >= 0 ? "towards" : "away"},
      el("span", {class: "feature", text: feature.feature}),
      el("span", {class: "kind", text: ` (${feature.kind}) `}),
      el("span", {class: "weight", text: `${weight >= 0 ? "+" : ""}${weight.toFixed(3)} ${weight >= 0 ? "towards" : "away"}`}));
  }));
}

// ---- Review ----------------------------------------------------------------------------------------

function labelPicker(onPicked) {
  const id = `picker-${++state.pickerCount}`;
  const input = el("input", {id: `${id}-input`, type: "text", autocomplete: "off", spellcheck: false,
    role: "combobox", "aria-autocomplete": "list", "aria-expanded": "false", "aria-controls": `${id}-list`,
    placeholder: "Type to search the categories"});
  const list = el("ul", {id: `${id}-list`, role: "listbox", class: "options", "aria-label": "Matching categories"});
  list.hidden = true;
  let matches = [];
  let active = -1;

  function close() {
    list.hidden = true;
    input.setAttribute("aria-expanded", "false");
    input.removeAttribute("aria-activedescendant");
    active = -1;
  }

  function choose(label) {
    input.value = label;
    close();
    if (onPicked) onPicked(label);
  }

  function render() {
    const query = input.value.trim().toLowerCase();
    matches = state.labels.filter((label) => !query || label.toLowerCase().includes(query)
      || labelPath(label).toLowerCase().includes(query)).slice(0, MAX_LABEL_MATCHES);
    active = Math.min(active, matches.length - 1);
    list.replaceChildren(...matches.map((label, index) => {
      const option = el("li", {id: `${id}-opt-${index}`, role: "option", "aria-selected": String(index === active),
        "data-label": label, text: label});
      const path = labelPath(label);
      if (path) option.append(el("span", {class: "subpath", text: path}));
      option.addEventListener("mousedown", (event) => {
        event.preventDefault(); // keep the focus in the input
        choose(label);
      });
      return option;
    }));
    if (!matches.length) list.append(el("li", {class: "none", text: "No category matches.", role: "presentation"}));
    list.hidden = false;
    input.setAttribute("aria-expanded", "true");
    if (active >= 0) input.setAttribute("aria-activedescendant", `${id}-opt-${active}`);
    else input.removeAttribute("aria-activedescendant");
  }

  input.addEventListener("input", () => {
    active = -1;
    render();
  });
  input.addEventListener("focus", render);
  input.addEventListener("blur", close);
  input.addEventListener("keydown", (event) => {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      if (list.hidden) render();
      const step = event.key === "ArrowDown" ? 1 : -1;
      active = matches.length ? (active + step + matches.length) % matches.length : -1;
      render();
    } else if (event.key === "Enter" && !list.hidden && active >= 0) {
      event.preventDefault(); // picks the option; a second Enter submits
      choose(matches[active]);
    } else if (event.key === "Escape") {
      close();
    }
  });
  return {input, list, id};
}

function reviewItem(item) {
  const product = item.product || {};
  const description = Array.isArray(product.description) ? product.description.join(" ") : product.description;
  const titleId = `review-${item.id}-title`;
  const status = el("p", {class: "status", role: "status", "aria-live": "polite"});
  const picker = labelPicker();
  const submit = el("button", {type: "submit", text: "Resolve"});
  const suggestions = el("div", {class: "suggestions"}, el("span", {class: "help", text: "The model's guesses: "}),
    ...(item.top_k || []).map((candidate) => {
      const use = el("button", {type: "button", class: "chip", text: `${candidate.label} ${percent(candidate.probability)}`});
      use.setAttribute("aria-label", `Use ${candidate.label} (${percent(candidate.probability)})`);
      use.addEventListener("click", () => {
        picker.input.value = candidate.label;
        picker.input.focus();
      });
      return use;
    }));
  const form = el("form", {class: "resolve"},
    el("label", {htmlFor: picker.input.id, text: "Right category"}),
    el("div", {class: "picker"}, picker.input, picker.list),
    submit);
  form.addEventListener("submit", (event) => resolve(event, item, picker.input, submit, status));
  const meta = [`#${item.id}`, `model ${item.model_name} version ${item.model_version}`,
    `top probability ${percent(item.probability)}`];
  if (item.threshold != null) meta.push(`threshold ${percent(item.threshold)}`);
  if (item.created_at) meta.push(new Date(item.created_at).toLocaleString());
  return el("li", {class: "item", "data-review-id": String(item.id)},
    el("article", {"aria-labelledby": titleId},
      el("h3", {id: titleId, text: product.title || (description || "").slice(0, 120) || "(no title)"}),
      el("p", {class: "meta", text: meta.join(" · ")}),
      description && product.title ? el("p", {class: "description", text: description.slice(0, 300)}) : null,
      product.brand ? el("p", {class: "meta", text: `Brand: ${product.brand}`}) : null,
      suggestions, form, status));
}

async function resolve(event, item, input, submit, status) {
  event.preventDefault();
  const label = input.value.trim();
  if (!label) {
    setStatus(status, "Pick a category first.", "error");
    input.focus();
    return;
  }
  if (state.labels.length && !state.labels.includes(label)) {
    setStatus(status, `“${label}” is not one of the ${state.labels.length} categories: pick one from the list.`,
      "error");
    input.focus();
    return;
  }
  submit.disabled = true;
  setStatus(status, "Saving…");
  const result = await api(`review/${encodeURIComponent(item.id)}/resolve`, {method: "POST", body: {label}});
  submit.disabled = false;
  if (!result.ok) {
    setStatus(status, problem(result, "review"), "error");
    return;
  }
  setStatus($("review-status"), `Item #${item.id} resolved as “${label}”; it counts as feedback for that prediction.`,
    "ok");
  const row = document.querySelector(`[data-review-id="${CSS.escape(String(item.id))}"]`);
  if (row) row.remove();
  if (!$("review-list").children.length && state.reviewOffset > 0) state.reviewOffset -= REVIEW_PAGE_SIZE;
  await loadReview({keepStatus: true});
}

async function loadReview({keepStatus = false} = {}) {
  const status = $("review-status");
  if (!keepStatus) setStatus(status, "Loading the queue…");
  const query = new URLSearchParams({status: "open", limit: String(REVIEW_PAGE_SIZE),
    offset: String(state.reviewOffset)});
  const result = await api(`review?${query}`);
  const list = $("review-list");
  if (!result.ok) {
    list.replaceChildren();
    $("review-count").textContent = "";
    setStatus(status, problem(result, "review"), "error");
    updatePager(0);
    return;
  }
  const page = result.data;
  state.reviewTotal = page.total;
  list.replaceChildren(...page.items.map(reviewItem));
  $("review-count").textContent = page.total ? `(${page.total})` : "";
  updatePager(page.items.length);
  if (!keepStatus) {
    setStatus(status, page.total ? `${page.total} open item${page.total === 1 ? "" : "s"}.` : "The queue is empty.");
  }
}

function updatePager(shown) {
  const first = shown ? state.reviewOffset + 1 : 0;
  $("review-page").textContent = state.reviewTotal
    ? `${first}–${state.reviewOffset + shown} of ${state.reviewTotal}` : "";
  $("review-prev").disabled = state.reviewOffset <= 0;
  $("review-next").disabled = state.reviewOffset + shown >= state.reviewTotal;
}

function page(step) {
  state.reviewOffset = Math.max(0, state.reviewOffset + step * REVIEW_PAGE_SIZE);
  loadReview();
}

// ---- Start -----------------------------------------------------------------------------------------

async function refreshAfterKey() {
  showKeyState();
  await loadModel();
  await loadLabels();
  if ($("tab-review").getAttribute("aria-selected") === "true") await loadReview();
}

function start() {
  $("api-key").value = apiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    refreshAfterKey();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    refreshAfterKey();
  });
  for (const tab of tabs()) {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", onTabKey);
  }
  $("classify-form").addEventListener("submit", classify);
  $("review-refresh").addEventListener("click", () => loadReview());
  $("review-prev").addEventListener("click", () => page(-1));
  $("review-next").addEventListener("click", () => page(1));
  showKeyState();
  loadModel().then(loadLabels);
  if (location.hash === "#review") selectTab($("tab-review"));
}

document.addEventListener("DOMContentLoaded", start);
