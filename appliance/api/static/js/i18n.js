// The two catalogues (/static/i18n/en.json, zh.json): every string the page shows comes from one.
// The box's own words (errors, service details) come with a phrase, {code, args}, rendered from
// the box's phrase catalogues (/static/phrases/en.json, zh.json; appliance/phrases/__init__.py).
// The language is the one chosen with the switch (kept in localStorage), else the browser's first
// language we have, else English. A key missing from a catalogue shows the English text, and the
// catalogue test (tests/api/static/test_catalogues.py) keeps both complete.
export const LANGUAGES = ["en", "zh"];
const STORE_KEY = "appliance.lang";
let current = "en";
let strings = {};
let english = {};
let phrases = {};

export function preferredLanguage() {
  const chosen = localStorage.getItem(STORE_KEY);
  if (LANGUAGES.includes(chosen)) return chosen;
  for (const tag of navigator.languages || [navigator.language]) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (LANGUAGES.includes(base)) return base;
  }
  return "en";
}

async function catalogue(code, folder = "i18n") {
  const reply = await fetch(`/static/${folder}/${code}.json`);
  if (!reply.ok) throw new Error(`catalogue ${folder}/${code}: HTTP ${reply.status}`);
  return reply.json();
}

export async function setLanguage(code, remember = false) {
  if (!Object.keys(english).length) english = await catalogue("en");
  strings = code === "en" ? english : await catalogue(code);
  // Without its phrases the page still works: it shows the box's English words.
  phrases = code === "en" ? {} : await catalogue(code, "phrases").catch(() => ({}));
  current = code;
  if (remember) localStorage.setItem(STORE_KEY, code);
  document.documentElement.lang = code === "zh" ? "zh-CN" : "en";
}

export function language() {
  return current;
}

/** The locale for numbers and dates. */
export function locale() {
  return current === "zh" ? "zh-CN" : "en";
}

/** t("tasks.task_n", {id: 4}) — "{id}" in the text is replaced; ``fallback`` when no catalogue has it. */
export function t(key, vars = {}, fallback = key) {
  const text = strings[key] ?? english[key] ?? fallback;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in vars ? String(vars[name]) : whole));
}

/** The box's words in this page's language: ``phrase`` ({code, args}) from the phrase catalogue,
 * else ``sent`` (the English text the box sent with it). */
export function said(phrase, sent) {
  const text = phrase && phrases[phrase.code];
  if (!text) return sent;
  const args = phrase.args ?? {};
  return text.replace(/\{(\w+)\}/g, (whole, name) => (name in args ? String(args[name]) : whole));
}

/** A service's detail: its parts by phrase when the catalogue has them all, else its English text. */
export function detail(health) {
  const parts = health.detail_phrases ?? [];
  const words = parts.map((phrase) => said(phrase, null));
  if (!parts.length || words.includes(null)) return health.detail || "";
  return words.join(current === "zh" ? "；" : "; ");
}
