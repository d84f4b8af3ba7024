// shapewise pages: small progressive enhancements. Every page works without this file.
"use strict";

(function () {
  // Runs table: "Compare selected" goes to /compare?ids=1,2,3.
  const compareForm = document.getElementById("compare-form");
  if (compareForm) {
    compareForm.addEventListener("submit", function (event) {
      event.preventDefault();
      const ids = Array.from(compareForm.querySelectorAll('input[name="ids"]:checked')).map(
        function (box) { return box.value; }
      );
      const message = document.getElementById("compare-message");
      if (ids.length === 0) {
        if (message) message.textContent = "Select at least one run to compare.";
        return;
      }
      if (message) message.textContent = "";
      window.location.href = "/compare?ids=" + ids.join(",");
    });
  }

  // New-sweep form: the number of runs the grid makes, as it is typed (the server checks again).
  const sweepForm = document.getElementById("sweep-form");
  const gridCount = document.getElementById("grid-count");
  if (sweepForm && gridCount) {
    const items = function (fieldId) {
      const input = document.getElementById(fieldId);
      if (!input) return 0;
      return input.value.split(",").filter(function (item) { return item.trim() !== ""; }).length;
    };
    const updateCount = function () {
      const checked = sweepForm.querySelectorAll('input[name="parameterizations"]:checked').length;
      const runs = checked * items("widths") * items("depths") * items("lrs") * Math.max(1, items("seeds"));
      const text = runs + (runs === 1 ? " run" : " runs");
      if (gridCount.textContent !== text) gridCount.textContent = text;
      gridCount.classList.toggle("too-many", runs > Number(gridCount.dataset.max || 1000));
    };
    sweepForm.addEventListener("input", updateCount);
    sweepForm.addEventListener("change", updateCount);
    updateCount();
  }

  // New-run form: the run's estimated peak memory against the server's limit, as it is typed
  // (300 ms after the last keystroke; the server checks again when the run is queued).
  const runForm = document.querySelector("form.new-run");
  const runEstimate = document.getElementById("run-estimate");
  if (runForm && runEstimate) {
    // The create-run body the form stands for (the server builds the same from the posted form).
    const runBody = function () {
      const body = {};
      const data = { kind: "builtin", seed: 0, vocab: 256 };
      new FormData(runForm).forEach(function (raw, key) {
        const text = String(raw).trim();
        if (text === "") return;
        if (key === "parameterization" || key === "name") {
          body[key] = text;
        } else if (key === "tags") {
          body.tags = text.split(",").map(function (t) { return t.trim(); }).filter(function (t) { return t !== ""; });
        } else {
          const number = Number(text);
          const value = Number.isFinite(number) ? number : text;
          if (key === "data_vocab") data.vocab = value;
          else if (key === "data_seed") data.seed = value;
          else body[key] = value;
        }
      });
      body.data = data;
      return body;
    };
    let timer = null;
    let latest = 0;
    const updateEstimate = function () {
      const ticket = ++latest;
      fetch("/api/v1/runs/estimate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(runBody()),
      })
        .then(function (response) {
          return response.json().then(function (answer) { return { ok: response.ok, answer: answer }; });
        })
        .then(function (result) {
          if (ticket !== latest) return;
          const text = result.ok
            ? result.answer.detail
            : "not a valid run: " + (result.answer.detail || "the server refused it");
          if (runEstimate.textContent !== text) runEstimate.textContent = text;
          runEstimate.classList.toggle("too-many", !result.ok || !result.answer.fits);
        })
        .catch(function () { /* keep the last estimate; the next edit tries again */ });
    };
    const schedule = function () {
      clearTimeout(timer);
      timer = setTimeout(updateEstimate, 300);
    };
    runForm.addEventListener("input", schedule);
    runForm.addEventListener("change", schedule);
  }

  // New-run form: Alpha applies only to "muP + depth, custom alpha"; elsewhere it is disabled
  // (and so not sent).
  const scalingRule = document.getElementById("parameterization");
  const alphaInput = document.getElementById("alpha");
  if (runForm && scalingRule && alphaInput) {
    const toggleAlpha = function () { alphaInput.disabled = scalingRule.value !== "alpha"; };
    scalingRule.addEventListener("change", toggleAlpha);
    toggleAlpha();
  }

  // A sweep's or a study's page: while runs are unfinished, refresh its progress, results and
  // table every 3 s
  // from a fresh copy of the page (parts holding the keyboard focus are left alone).
  const sweep = document.getElementById("sweep");
  if (sweep && sweep.dataset.final === "false") {
    // The parts marked `data-refresh` (a study page marks its own).
    const marked = Array.from(sweep.querySelectorAll("[data-refresh]")).map(function (e) { return e.id; });
    const parts = marked.length ? marked : ["sweep-progress", "sweep-chart", "sweep-runs"];
    let busy = false;
    const timer = setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch(window.location.href, { cache: "no-store" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          const fresh = new DOMParser().parseFromString(html, "text/html");
          parts.forEach(function (partId) {
            const now = document.getElementById(partId);
            const next = fresh.getElementById(partId);
            if (now && next && now.innerHTML !== next.innerHTML && !now.contains(document.activeElement)) {
              now.innerHTML = next.innerHTML;
            }
          });
          const freshSweep = fresh.getElementById("sweep");
          if (freshSweep && freshSweep.dataset.final === "true") {
            clearInterval(timer);
            sweep.dataset.final = "true";
          }
        })
        .catch(function () { /* keep what is shown; try again next time */ })
        .finally(function () { busy = false; });
    }, 3000);
  }

  // A run's page: live status and chart while the run is queued or running.
  const run = document.getElementById("run");
  if (!run || run.dataset.final === "true" || !window.EventSource) return;
  const id = run.dataset.runId;
  const chart = document.getElementById("chart");
  const statusText = document.getElementById("run-status");
  const note = document.getElementById("live-note");
  const finalStatuses = ["succeeded", "failed", "diverged", "cancelled"];

  // Re-fetch the chart at most once a second, always once more after the last event.
  let loading = false;
  let pending = false;
  let lastLoad = 0;
  function refreshChart() {
    if (!chart) return;
    if (loading) { pending = true; return; }
    const wait = 1000 - (Date.now() - lastLoad);
    if (wait > 0) {
      if (!pending) { pending = true; setTimeout(function () { pending = false; refreshChart(); }, wait); }
      return;
    }
    loading = true;
    lastLoad = Date.now();
    chart.classList.add("updating");
    fetch(chart.dataset.src, { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (svg) { chart.innerHTML = svg; })
      .catch(function () { /* keep the last chart; the next event tries again */ })
      .finally(function () {
        loading = false;
        chart.classList.remove("updating");
        if (pending) { pending = false; refreshChart(); }
      });
  }

  // When the run ends, take the final summary from a fresh copy of this page.
  function refreshSummary() {
    fetch(window.location.href, { cache: "no-store" })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html");
        ["run-summary", "run-status", "cancel-area"].forEach(function (elementId) {
          const now = document.getElementById(elementId);
          const next = fresh.getElementById(elementId);
          if (now && next && !now.contains(document.activeElement)) now.innerHTML = next.innerHTML;
          if (now && next && elementId === "run-status") now.className = next.className;
        });
      })
      .catch(function () {});
  }

  function setStatus(status) {
    if (statusText) {
      statusText.textContent = status;
      statusText.className = "status status-" + status;
    }
  }

  const source = new EventSource("/api/v1/runs/" + encodeURIComponent(id) + "/events");
  let seenInitial = false;
  source.addEventListener("status", function (event) {
    let data;
    try { data = JSON.parse(event.data); } catch (e) { return; }
    // The first event repeats the status the page already shows (with its queue position).
    if (!seenInitial) {
      seenInitial = true;
      if (statusText && statusText.textContent.indexOf(data.status) === 0) return;
    }
    setStatus(data.status);
    refreshChart();
    if (finalStatuses.indexOf(data.status) >= 0) {
      source.close();
      run.dataset.final = "true";
      if (note) note.textContent = "The run has ended.";
    }
    refreshSummary();
  });
  source.addEventListener("metrics", refreshChart);
  window.addEventListener("pagehide", function () { source.close(); });
})();

// A diagnostic's page: while it is queued or running, refresh its status, progress and results
// every 3 s from a fresh copy of the page, and stop once it has ended.
(function () {
  const diagnostic = document.getElementById("diagnostic");
  if (!diagnostic || diagnostic.dataset.final !== "false") return;
  let busy = false;
  const timer = setInterval(function () {
    if (busy || document.hidden) return;
    busy = true;
    fetch(window.location.href, { cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html");
        const now = document.getElementById("diagnostic-live");
        const next = fresh.getElementById("diagnostic-live");
        if (now && next && now.innerHTML !== next.innerHTML) now.innerHTML = next.innerHTML;
        const freshDiagnostic = fresh.getElementById("diagnostic");
        if (freshDiagnostic && freshDiagnostic.dataset.final === "true") {
          clearInterval(timer);
          diagnostic.dataset.final = "true";
        }
      })
      .catch(function () { /* keep what is shown; try again next time */ })
      .finally(function () { busy = false; });
  }, 3000);
})();

// Runs page: import a CSV file through POST /api/v1/runs/import.csv.
(function () {
  const form = document.getElementById("csv-import");
  if (!form) return;
  const result = document.getElementById("csv-result");
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const file = document.getElementById("csv-file").files[0];
    if (!file) return;
    const query = new URLSearchParams();
    ["parameterization", "tags"].forEach(function (name) {
      const value = form.elements[name].value.trim();
      if (value) query.set(name, value);
    });
    result.textContent = "Importing " + file.name + "…";
    file.text()
      .then(function (text) {
        return fetch("/api/v1/runs/import.csv?" + query.toString(), {
          method: "POST",
          headers: { "Content-Type": "text/csv" },
          body: text,
        });
      })
      .then(function (response) {
        return response.json().then(function (answer) { return { ok: response.ok, answer: answer }; });
      })
      .then(function (r) {
        if (r.ok) {
          result.textContent = "Imported " + r.answer.ids.length + " runs from " + file.name + ".";
          setTimeout(function () { window.location.reload(); }, 800);
        } else {
          result.textContent = "Refused: " + (r.answer.detail || "the server refused the file");
        }
      })
      .catch(function (error) { result.textContent = "Import failed: " + error.message; });
  });
})();
