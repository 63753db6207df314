// The status page: reads /api/status every few seconds and redraws. Every text goes in with
// textContent (never innerHTML): job names, messages and errors are shown, never run.
"use strict";

const REFRESH_MS = 3000;
const imagesShown = new Map(); // run id -> true once its plots are on the page

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  const future = s < 0;
  const a = Math.abs(s);
  const text = a < 90 ? `${a} s` : a < 5400 ? `${Math.round(a / 60)} min`
    : a < 129600 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

function took(run) {
  if (!run || !run.started_at || !run.finished_at) return "";
  const s = (Date.parse(run.finished_at) - Date.parse(run.started_at)) / 1000;
  return s < 90 ? `${s.toFixed(1)} s` : s < 5400 ? `${(s / 60).toFixed(1)} min`
    : `${(s / 3600).toFixed(1)} h`;
}

function jobRow(job) {
  const tr = el("tr");
  tr.dataset.job = job.name;
  const name = el("td");
  name.append(el("strong", job.name));
  if (!job.valid) name.append(el("div", job.error, "error"));
  if (job.overdue) name.append(el("div", job.overdue, "overdue"));
  const schedule = !job.in_effect ? "" : job.schedule || (job.after.length ? `after ${job.after.join(", ")}` : "manual");
  tr.append(name, el("td", job.kind || ""), el("td", schedule));
  tr.append(el("td", job.suspended ? "suspended" : job.next_run ? ago(job.next_run) : "–", "next"));
  const last = job.last_run;
  const state = el("td", last ? last.state : "never", `last-state state-${last ? last.state : "none"}`);
  if (last && last.message) state.append(el("div", last.message, "message"));
  tr.append(state, el("td", took(last)), el("td", last && last.finished_at ? ago(last.finished_at) : ""));
  const now = el("td", "", "active");
  for (const id of job.active_runs) {
    const line = el("div", `running ${id}`, "state-running");
    const p = job.progress && job.progress[id];
    if (p && p.total) line.append(el("span", ` · ${p.done}/${p.total} objects`, "progress"));
    now.append(line);
  }
  for (const retry of job.pending_retries || []) now.append(el("div", `retry ${retry.attempt} ${ago(retry.due)}`));
  tr.append(now);
  return tr;
}

function batchSection(job) {
  const last = job.last_run;
  const active = job.active_runs.map((id) => [id, job.progress && job.progress[id]]).filter((x) => x[1]);
  const objects = last && last.result && Array.isArray(last.result.objects) ? last.result.objects : null;
  if (!active.length && !objects) return null;
  const section = el("section", null, "batch");
  section.dataset.job = job.name;
  section.append(el("h2", `Batch ${job.name}`));
  for (const [id, p] of active) {
    section.append(el("p", `run ${id}: ${p.done} of ${p.total} done`, "progress"));
    const table = el("table", null, "objects");
    for (const [obj, st] of Object.entries(p.objects || {})) {
      const tr = el("tr");
      tr.append(el("td", obj), el("td", st, `state-${st}`));
      table.append(tr);
    }
    section.append(table);
  }
  if (objects) {
    section.append(el("p", `last run ${last.run_id}: ${last.result.summary || last.state}`));
    const table = el("table", null, "objects");
    const head = el("tr");
    for (const h of ["object", "band", "state", "epochs", "backend", "error"]) head.append(el("th", h));
    table.append(head);
    for (const o of objects) {
      const tr = el("tr");
      tr.dataset.object = o.oid;
      tr.append(el("td", o.oid), el("td", o.band), el("td", o.state, `state-${o.state}`),
        el("td", `${o.epochs_measured}${o.epochs_failed ? ` (+${o.epochs_failed} failed)` : ""}`),
        el("td", o.backend), el("td", o.error, "error"));
      table.append(tr);
    }
    section.append(table);
    const plots = el("div", null, "plots");
    plots.dataset.run = last.run_id;
    section.append(plots);
    fillPlots(plots, last.run_id);
  }
  return section;
}

async function fillPlots(box, runId) {
  const response = await fetch(`/api/runs/${encodeURIComponent(runId)}/images`);
  if (!response.ok) return;
  for (const image of await response.json()) {
    const img = el("img");
    img.alt = image.name;
    img.loading = "lazy";
    img.src = `/api/runs/${encodeURIComponent(runId)}/images/${image.index}`;
    box.append(img);
  }
  imagesShown.set(runId, true);
}

function render(status) {
  const health = document.getElementById("health");
  health.textContent = status.health.line;
  health.className = `health ${status.health.state}`;
  const d = status.daemon;
  document.getElementById("daemon").textContent = d.running
    ? `daemon pid ${d.pid} on ${d.host} since ${ago(d.started_at)} · jobs ${d.jobs_dir} · ${d.active_runs} running`
    : "the daemon is not running";
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren(...status.jobs.map(jobRow));
  const executors = document.getElementById("executors");
  executors.replaceChildren(...Object.entries(d.executors || {}).map(([name, h]) => {
    const paused = h.breaker === "open";
    return el("li", `${name}: ${h.tracked_runs || 0} runs followed${paused ? `, submission PAUSED: ${h.last_error}` : h.breaker ? `, breaker ${h.breaker}` : ""}`, paused ? "error" : "");
  }));
  const batches = document.getElementById("batches");
  const keep = new Map([...batches.querySelectorAll("section.batch")].map((s) => [s.dataset.job, s]));
  const sections = status.jobs.filter((j) => j.kind === "PhotometryBatch").map((job) => {
    const old = keep.get(job.name);
    const runId = job.last_run && job.last_run.run_id;
    const oldPlots = old && old.querySelector(".plots");
    if (old && oldPlots && oldPlots.dataset.run === runId && !job.active_runs.length) return old;
    return batchSection(job);
  }).filter(Boolean);
  batches.replaceChildren(...sections);
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
}

async function refresh() {
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (!response.ok) throw new Error(await response.text());
    render(await response.json());
  } catch (err) {
    const health = document.getElementById("health");
    health.textContent = `no answer from the daemon: ${err.message}`;
    health.className = "health down";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
