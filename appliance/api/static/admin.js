"use strict";
// The page holds no data of its own: it shows what /api/v1/health reports, with details
// only for a valid token (kept in sessionStorage, never in the URL).
const rows = document.querySelector("#services tbody");

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function render(report) {
  document.getElementById("overall").textContent = report.status;
  rows.replaceChildren();
  const services = Array.isArray(report.services)
    ? report.services
    : Object.entries(report.services).map(([name, state]) => ({ name, state }));
  for (const s of services) {
    const tr = document.createElement("tr");
    tr.append(cell(s.name), cell(s.state, s.state), cell(s.version ?? ""),
      cell(s.uptime_s === undefined ? "" : `${Math.round(s.uptime_s)} s`), cell(s.detail ?? ""));
    rows.append(tr);
  }
}

async function refresh() {
  const token = sessionStorage.getItem("token");
  const response = token
    ? await fetch("/api/v1/health", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) })
    : await fetch("/api/v1/health");
  if (response.status === 401) sessionStorage.removeItem("token");
  render(await response.json().then((r) => (r.error ? { status: r.error.message, services: {} } : r)));
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("token", document.getElementById("token").value.trim());
  refresh();
});
refresh();
setInterval(refresh, 5000);
