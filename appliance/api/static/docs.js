// Renders /api/v1/openapi.json as a page: operations by tag, parameters, bodies and replies.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function resolve(spec, schema) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
  return schema;
}

function schemaText(spec, schema, depth) {
  const seen = depth || 0;
  const resolved = resolve(spec, schema) || {};
  if (seen > 2) return schema && schema.$ref ? schema.$ref.split("/").pop() : "{…}";
  const copy = JSON.parse(JSON.stringify(resolved));
  for (const [name, property] of Object.entries(copy.properties || {})) {
    if (property.$ref) copy.properties[name] = schemaText(spec, property, seen + 1);
  }
  return copy;
}

function operation(spec, path, method, op) {
  const rows = (op.parameters || []).map((p) =>
    el("tr", {}, el("td", {}, p.name), el("td", {}, p.in), el("td", {}, p.required ? "required" : ""),
       el("td", {}, JSON.stringify(p.schema))));
  const body = op.requestBody && op.requestBody.content["application/json"];
  const ok = Object.entries(op.responses).find(([status]) => status.startsWith("2"));
  const reply = ok && ok[1].content && Object.values(ok[1].content)[0];
  return el("details", {},
    el("summary", {}, el("span", {class: `method ${method.toUpperCase()}`}, method.toUpperCase()), " ",
       el("span", {class: "path"}, path), " — ", op.summary, el("span", {class: "role"}, op["x-permission"])),
    el("p", {}, op.description),
    rows.length ? el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, ""),
                                    el("th", {}, "schema")), ...rows) : "",
    body ? el("div", {}, el("strong", {}, "Body"), el("pre", {}, JSON.stringify(schemaText(spec, body.schema), null, 2))) : "",
    reply ? el("div", {}, el("strong", {}, `Reply ${ok[0]}`),
               el("pre", {}, JSON.stringify(schemaText(spec, reply.schema), null, 2))) : "");
}

async function main() {
  const target = document.getElementById("docs");
  const spec = await (await fetch("/api/v1/openapi.json")).json();
  const byTag = new Map();
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const tag = op.tags[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(spec, path, method, op));
    }
  }
  target.replaceChildren(el("pre", {}, spec.info.description));
  for (const [tag, ops] of [...byTag.entries()].sort()) target.append(el("h2", {}, tag), ...ops);
}

main().catch((error) => { document.getElementById("docs").textContent = `Cannot load the spec: ${error}`; });
