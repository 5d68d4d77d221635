// pylium Hubble UI: polls /api/servicemap and /api/flows with the form's filters and renders
// the map (inline SVG) and the flow table. No framework, no build step.
const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 2000;
const form = document.getElementById("filters");
const svg = document.getElementById("map");
const tbody = document.querySelector("#flows tbody");
const statusLine = document.getElementById("status");

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function query() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    if (k !== "follow" && v.trim()) params.append(k, v.trim());
  }
  return params.toString();
}

async function getJSON(path) {
  const resp = await fetch(path);
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${await resp.text()}`);
  return resp.json();
}

// Namespaces are columns; peers outside the cluster (world, host, IPs) share the last one.
function layout(map) {
  const outside = map.nodes.some((n) => !n.namespace);
  const columns = [...map.namespaces, ...(outside || !map.namespaces.length ? [""] : [])];
  const width = svg.clientWidth || 1100;
  const colWidth = width / columns.length;
  const rows = new Map(columns.map((c) => [c, 0]));
  const pos = new Map();
  for (const node of map.nodes) {
    const col = columns.indexOf(node.namespace);
    const row = rows.get(node.namespace);
    rows.set(node.namespace, row + 1);
    // Alternate sides of the column so edges inside one namespace stay visible.
    const dx = (row % 2 ? 0.62 : 0.2) * colWidth;
    pos.set(node.id, { x: col * colWidth + dx, y: 50 + row * 44 });
  }
  return { columns, colWidth, pos, height: 60 + 44 * Math.max(1, ...rows.values()) };
}

function arrowheads() {
  const defs = el("defs");
  for (const [cls, colour] of [["FORWARDED", "#2e9e44"], ["DROPPED", "#d32f2f"], ["other", "#888"]]) {
    const marker = el("marker", {
      id: `arrow-${cls}`, viewBox: "0 0 10 10", refX: 19, refY: 5,
      markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse",
    });
    marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: colour }));
    defs.append(marker);
  }
  return defs;
}

function renderMap(map) {
  const { columns, colWidth, pos, height } = layout(map);
  svg.replaceChildren(arrowheads());
  svg.setAttribute("height", Math.max(360, height));
  columns.forEach((ns, i) => {
    const g = el("g", { class: "ns", "data-namespace": ns || "outside" });
    g.append(el("rect", { x: i * colWidth + 6, y: 6, width: colWidth - 12, height: height - 12, rx: 8 }));
    g.append(el("text", { x: i * colWidth + 14, y: 24 }, ns ? `namespace ${ns}` : "outside the cluster"));
    svg.append(g);
  });
  for (const edge of map.edges) {
    const a = pos.get(edge.source), b = pos.get(edge.destination);
    if (!a || !b) continue;
    const bend = edge.verdict === "DROPPED" ? 30 : -30;
    const self = edge.source === edge.destination;
    const mx = (a.x + b.x) / 2 + bend, my = (a.y + b.y) / 2 + bend;
    // Traffic of a peer to itself (e.g. world to world) is a loop above the node.
    const d = self
      ? `M${a.x - 6},${a.y - 7} C${a.x - 30},${a.y - 45} ${a.x + 30},${a.y - 45} ${a.x + 6},${a.y - 7}`
      : `M${a.x},${a.y} Q${mx},${my} ${b.x},${b.y}`;
    const cls = ["FORWARDED", "DROPPED"].includes(edge.verdict) ? edge.verdict : "other";
    const path = el("path", {
      class: `edge ${cls}`, "marker-end": self ? "" : `url(#arrow-${cls})`, d,
      "data-source": edge.source, "data-destination": edge.destination, "data-verdict": edge.verdict,
    });
    path.append(el("title", {}, `${edge.source} → ${edge.destination}: ${edge.flows} ${edge.verdict} (${edge.ports.join(", ")})`));
    svg.append(path);
    if (edge.verdict === "DROPPED") {
      const reasons = Object.entries(edge.dropReasons).map(([r, n]) => `${r} ×${n}`).join(", ");
      const at = self ? { x: a.x + 20, y: a.y - 30 } : { x: mx, y: my };
      svg.append(el("text", { class: "edge-label", ...at }, `DROPPED: ${reasons}`));
    }
  }
  for (const node of map.nodes) {
    const p = pos.get(node.id);
    const g = el("g", { class: `node ${node.kind}`, "data-id": node.id });
    if (node.kind === "service") {
      g.append(el("rect", { x: p.x - 9, y: p.y - 9, width: 18, height: 18, rx: 3 }));
    } else {
      g.append(el("circle", { cx: p.x, cy: p.y, r: 9 }));
    }
    const label = node.kind === "pod" || node.kind === "service" ? node.name : node.id;
    g.append(el("text", { x: p.x + 13, y: p.y + 4 }, `${label}${node.ip ? " " + node.ip : ""}`));
    svg.append(g);
  }
}

function side(flow, which) {
  const ep = flow[which] || {};
  const ip = (flow.IP || {})[which] || "";
  const l4 = flow.l4 || {};
  const proto = l4.TCP || l4.UDP;
  const port = proto ? proto[`${which}_port`] : "";
  const name = ep.pod_name ? `${ep.namespace}/${ep.pod_name}` : ip;
  return `${name}${port ? ":" + port : ""}`;
}

function l4Text(flow) {
  const l4 = flow.l4 || {};
  if (l4.TCP) return "TCP " + Object.keys(l4.TCP.flags || {}).join(",");
  if (l4.UDP) return "UDP";
  if (l4.ICMPv4) return `ICMPv4 ${l4.ICMPv4.type || 0}`;
  return "";
}

function renderTable(responses) {
  const rows = responses.filter((r) => r.flow).reverse().map(({ flow }) => {
    const tr = document.createElement("tr");
    const verdict = flow.verdict || "VERDICT_UNKNOWN";
    tr.className = verdict;
    const point = verdict === "DROPPED" ? flow.drop_reason_desc : flow.trace_observation_point;
    const cells = [flow.time, flow.node_name, side(flow, "source"), side(flow, "destination"), l4Text(flow), point || "", verdict];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text || "";
      if (i === 6) td.className = `verdict ${verdict}`;
      tr.append(td);
    });
    return tr;
  });
  tbody.replaceChildren(...rows);
}

async function refresh() {
  const q = query();
  try {
    const [map, flows] = await Promise.all([
      getJSON(`/api/servicemap?${q}`),
      getJSON(`/api/flows?number=200&${q}`),
    ]);
    renderMap(map);
    renderTable(flows.flows);
    statusLine.textContent = `${map.nodes.length} nodes, ${map.edges.length} edges, updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    statusLine.textContent = String(err);
  }
}

form.addEventListener("change", refresh);
form.addEventListener("submit", (e) => { e.preventDefault(); refresh(); });
setInterval(() => { if (form.elements.follow.checked) refresh(); }, POLL_MS);
refresh();
