// The page: one form, one POST to v1/predict, then the heatmap and growth chart as images.
// Plain JavaScript, no build step, nothing from the internet. URLs are relative, so the page also
// works behind a reverse proxy that serves it under a sub-path.
"use strict";

const $ = (id) => document.getElementById(id);
let chosen = null;
const shown = [];  // object URLs to release when the next result replaces them

function years(months) {
  const total = Math.round(months);
  return `${Math.floor(total / 12)}y ${total % 12}m`;
}

function choose(file) {
  chosen = file || null;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !chosen;
  if (chosen) preview.src = URL.createObjectURL(chosen);  // a DICOM shows no preview: the name says it
  $("drop-text").innerHTML = chosen
    ? `<strong>${escapeHtml(chosen.name)}</strong><br><span class="muted">choose or drop another to replace it</span>`
    : "<strong>Choose a radiograph</strong> or drop it here";
}

function escapeHtml(text) {
  const div = document.createElement("div");
  div.textContent = text;
  return div.innerHTML;
}

function formData() {
  const data = new FormData();
  data.append("file", chosen);
  const sex = document.querySelector("input[name=sex]:checked");
  if (sex) data.append("sex", sex.value);
  const age = $("age").value.trim();
  if (age) data.append("age", age);
  return data;
}

async function post(path, data) {
  const response = await fetch(path, { method: "POST", body: data });
  if (response.ok) return response;
  let error = { code: `http_${response.status}`, message: response.statusText };
  try { error = (await response.json()).error || error; } catch (_) { /* not JSON: keep the status */ }
  throw Object.assign(new Error(error.message), { code: error.code, status: response.status });
}

function showError(error) {
  $("result").hidden = true;
  $("error").hidden = false;
  $("error-message").textContent = error.message;
  $("error-code").textContent = error.code || "network";
}

function showPrediction(p) {
  $("error").hidden = true;
  $("result").hidden = false;
  $("bone-age-years").textContent = years(p.bone_age_months);
  $("bone-age-months").textContent = `(${p.bone_age_months.toFixed(1)} months)`;
  const i = p.interval;
  $("interval").textContent = i
    ? `${Math.round(i.level * 100)}% interval: ${i.low_months.toFixed(0)}–${i.high_months.toFixed(0)} months ` +
      `(${years(i.low_months)} – ${years(i.high_months)})`
    : "This model has no interval.";
  const c = p.comparison;
  $("comparison").hidden = !c;
  if (c) {
    $("age-shown").textContent = `${c.chronological_age_months.toFixed(1)} months (${years(c.chronological_age_months)})`;
    $("difference").textContent = `${c.bone_age_minus_age_months >= 0 ? "+" : ""}${c.bone_age_minus_age_months.toFixed(1)} months`;
    $("expected").textContent = c.expected_bone_age_months == null ? "—"
      : `${c.expected_bone_age_months.toFixed(1)} months, SD ${c.sd_months.toFixed(1)}`;
    $("sds").textContent = c.sds == null ? (c.note || "no reference row") : `${c.sds >= 0 ? "+" : ""}${c.sds.toFixed(1)}`;
    $("category").textContent = c.category || "";
    $("category").className = `badge ${c.category || ""}`;
    $("reference").textContent = c.reference;
  }
  fill($("warnings"), p.warnings);
  fill($("notes"), p.notes);
  $("made-by").textContent = `${p.male ? "Male" : "Female"} · ${p.model_name} ${p.model_version} (${p.runtime})`;
}

function fill(list, items) {
  list.replaceChildren(...items.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
}

async function figure(path, id, data) {
  const response = await post(path, data);
  const url = URL.createObjectURL(await response.blob());
  shown.push(url);
  $(id).src = url;
  $(`${id}-figure`).hidden = false;
}

async function submit(event) {
  event.preventDefault();
  if (!chosen) return showError({ code: "no_file", message: "Choose a radiograph first." });
  const button = $("submit");
  button.disabled = true;
  $("status").textContent = "Estimating…";
  shown.splice(0).forEach((url) => URL.revokeObjectURL(url));
  $("heatmap-figure").hidden = $("chart-figure").hidden = true;
  $("figure-note").textContent = "";
  try {
    const prediction = await (await post("v1/predict", formData())).json();
    showPrediction(prediction);
    if (window.matchMedia("(max-width: 860px)").matches) $("result").scrollIntoView({ block: "start" });  // one column
    $("status").textContent = "Done.";
    const notes = [];
    const pending = [];
    if (prediction.comparison) {
      pending.push(figure("v1/chart", "chart", formData()).catch((e) => notes.push(
        e.code === "missing_dependency" ? "No growth chart: the server lacks matplotlib (boneage[plot])." : `No growth chart: ${e.message}`)));
    } else {
      notes.push("Give the age to see the growth chart.");
    }
    if ($("want-heatmap").checked) {
      $("status").textContent = "Done. Drawing the heatmap…";
      pending.push(figure("v1/explain", "heatmap", formData()).catch((e) => notes.push(`No heatmap: ${e.message}`)));
    }
    await Promise.all(pending);
    $("figure-note").textContent = notes.join(" ");
    $("status").textContent = "Done.";
  } catch (error) {
    showError(error);
    $("status").textContent = "";
  } finally {
    button.disabled = false;
  }
}

async function loadModel() {
  try {
    const response = await fetch("v1/model");
    const info = await response.json();
    $("model").textContent = response.ok
      ? `${info.name} ${info.version}${info.known_release ? "" : " (not a known release)"} · reference ${info.reference}`
      : info.error.message;
  } catch (_) {
    $("model").textContent = "the server does not answer";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) choose(e.dataTransfer.files[0]); });
  $("form").addEventListener("submit", submit);
  loadModel();
});
