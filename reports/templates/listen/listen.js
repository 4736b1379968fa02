// The listening test page (MUSHRA, ITU-R BS.1534-3) written by `afx-bench listen export`; no framework, no server.
// The trials come from trials.js (window.AFX_LISTEN). The order of the trials and of each trial's conditions is
// shuffled per listener by a PRNG seeded from the test id and the listener id, so a listener who starts again
// with the same id sees the same order. Ratings are kept in memory and saved as a CSV through a Blob link.
(() => {
  "use strict";
  const T = window.AFX_LISTEN;
  const $ = (id) => document.getElementById(id);
  const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
  const COLUMNS = ["listener", "trial", "position", "task", "example", "condition", "system", "label", "rating",
                   "played", "plays", "order", "timestamp", "test_id"];

  if (!T || !Array.isArray(T.trials) || !T.trials.length) {
    $("title").insertAdjacentHTML("afterend", '<p class="warn">No trials: trials.js is missing or empty. ' +
      "Export the test again with <code>afx-bench listen export</code>.</p>");
    return;
  }
  const SCALE = T.scale || [[80, "Excellent"], [60, "Good"], [40, "Fair"], [20, "Poor"], [0, "Bad"]];
  const category = (v) => (SCALE.find(([lo]) => v >= lo) || SCALE[SCALE.length - 1])[1];

  // --- seeded order: FNV-1a of the seed string, then mulberry32 -------------------------------------------------
  function hash(str) {
    let h = 2166136261 >>> 0;
    for (let i = 0; i < str.length; i++) h = Math.imul(h ^ str.charCodeAt(i), 16777619) >>> 0;
    return h;
  }
  function mulberry32(a) {
    return () => {
      a = (a + 0x6D2B79F5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  function shuffled(n, rand) {
    const a = Array.from({length: n}, (_, i) => i);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }

  const S = {listener: "", order: [], conds: [], pos: 0, rows: [], trial: null};

  // --- playback: one clip at a time -----------------------------------------------------------------------------
  function stopAll() {
    for (const a of document.querySelectorAll("#trial audio")) {
      if (!a.paused) a.pause();
      a.currentTime = 0;
    }
  }
  function player(src, button, name, onPlaying) {
    const audio = document.createElement("audio");
    audio.preload = "auto";
    audio.src = src;
    const idle = () => { button.textContent = "Play " + name; button.setAttribute("aria-pressed", "false"); };
    audio.addEventListener("playing", () => {
      button.textContent = "Stop " + name;
      button.setAttribute("aria-pressed", "true");
      if (onPlaying) onPlaying();
    });
    audio.addEventListener("pause", idle);
    audio.addEventListener("ended", idle);
    audio.addEventListener("error", () => status("Could not load " + src + "."));
    button.addEventListener("click", () => {
      if (!audio.paused) { audio.pause(); audio.currentTime = 0; return; }
      stopAll();
      const p = audio.play();
      if (p && p.catch) p.catch((e) => { if (e.name !== "AbortError") status("Could not play: " + e.message); });
    });
    idle();
    return audio;
  }

  function status(text) { $("status").textContent = text; }
  function updateStatus() {
    const t = S.trial;
    const left = t.labels.filter((_, k) => !t.played.has(k));
    $("next").disabled = left.length > 0;
    status(left.length ? "Play every version before you go on; not played yet: " + left.join(", ") + "."
                       : "All versions played: set each rating, then go on.");
  }

  // --- screens --------------------------------------------------------------------------------------------------
  function show(id) {
    for (const s of ["start", "trial", "done"]) $(s).hidden = s !== id;
  }

  function start(listener) {
    S.listener = listener;
    const rand = mulberry32(hash(T.test_id + "|" + listener));
    S.order = shuffled(T.trials.length, rand);
    S.conds = T.trials.map((t) => shuffled(t.conditions.length, rand));
    S.pos = 0;
    S.rows = [];
    showTrial();
  }

  function showTrial() {
    stopAll();
    const ti = S.order[S.pos];
    const trial = T.trials[ti];
    const order = S.conds[ti];
    S.trial = {index: ti, played: new Set(), plays: order.map(() => 0), labels: order.map((_, k) => LETTERS[k]),
               sliders: []};
    $("trial-n").textContent = String(S.pos + 1);
    $("trial-total").textContent = String(T.trials.length);
    $("next").textContent = S.pos + 1 < T.trials.length ? "Next trial" : "Finish";

    const refButton = $("play-reference").cloneNode(false);  // drop the last trial's listener
    $("play-reference").replaceWith(refButton);
    document.querySelectorAll("#trial audio").forEach((a) => a.remove());
    refButton.after(player(trial.reference.src, refButton, "reference", null));

    const box = $("conditions");
    box.textContent = "";
    order.forEach((ci, k) => {
      const c = trial.conditions[ci];
      const label = LETTERS[k];
      const col = document.createElement("div");
      col.className = "cond";
      const head = document.createElement("label");
      head.className = "label";
      head.htmlFor = "rate-" + label;
      head.textContent = label;
      const slider = document.createElement("input");
      Object.assign(slider, {type: "range", min: "0", max: "100", step: "1", value: "0", id: "rate-" + label,
                             className: "rating"});
      slider.setAttribute("aria-label", "Rating of " + label);
      const out = document.createElement("output");
      out.htmlFor = slider.id;
      const sync = () => {
        const v = Number(slider.value);
        out.textContent = String(v);
        slider.setAttribute("aria-valuetext", v + " (" + category(v).toLowerCase() + ")");
      };
      slider.addEventListener("input", sync);
      sync();
      const button = document.createElement("button");
      button.type = "button";
      button.className = "play";
      button.id = "play-" + label;
      const audio = player(c.src, button, label, () => {
        S.trial.played.add(k);
        S.trial.plays[k] += 1;
        col.classList.add("played");
        updateStatus();
      });
      col.append(head, slider, out, button, audio);
      box.append(col);
      S.trial.sliders.push(slider);
    });
    updateStatus();
    show("trial");
    $("trial-h").focus();
  }

  function record() {
    const trial = T.trials[S.trial.index];
    const now = new Date().toISOString();
    S.conds[S.trial.index].forEach((ci, k) => {
      const c = trial.conditions[ci];
      S.rows.push({listener: S.listener, trial: trial.id, position: S.pos + 1, task: trial.task,
                   example: trial.example, condition: c.condition, system: c.system, label: LETTERS[k],
                   rating: Number(S.trial.sliders[k].value), played: S.trial.played.has(k) ? 1 : 0,
                   plays: S.trial.plays[k], order: k + 1, timestamp: now, test_id: T.test_id});
    });
  }

  function showDone() {
    stopAll();
    $("done-text").textContent = "You rated " + T.trials.length + " trials. Save your ratings:";
    link($("save"));
    show("done");
    $("done-h").focus();
  }

  // --- the CSV --------------------------------------------------------------------------------------------------
  function cell(v) {
    const s = String(v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function csv() {
    return [COLUMNS.join(","), ...S.rows.map((r) => COLUMNS.map((c) => cell(r[c])).join(","))].join("\n") + "\n";
  }
  function link(a) {
    if (a.dataset.url) URL.revokeObjectURL(a.dataset.url);
    const url = URL.createObjectURL(new Blob([csv()], {type: "text/csv"}));
    a.dataset.url = url;
    a.href = url;
    a.download = "ratings-" + S.listener + "-" + new Date().toISOString().replace(/[:.]/g, "-") + ".csv";
  }

  // --- wiring ---------------------------------------------------------------------------------------------------
  document.title = T.title || document.title;
  $("title").textContent = T.title || "Listening test";
  const bands = document.querySelector(".scale");
  for (const [lo, name] of SCALE) {
    const b = document.createElement("div");
    b.className = "band";
    b.innerHTML = "<span>" + name + "</span><small>" + lo + "&ndash;" + (lo + 20) + "</small>";
    bands.append(b);
  }
  const given = new URLSearchParams(location.search).get("listener");
  if (given) $("listener").value = given;
  $("start-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("listener").value.trim();
    if (!$("start-form").reportValidity() || !id) return;
    start(id);
  });
  $("next").addEventListener("click", () => {
    if (S.trial.played.size < S.trial.labels.length) { updateStatus(); return; }
    record();
    S.pos += 1;
    if (S.pos < T.trials.length) showTrial(); else showDone();
  });
  $("save-partial").addEventListener("click", (e) => {
    if (!S.rows.length) { e.preventDefault(); status("Nothing to save yet: finish a trial first."); return; }
    link(e.currentTarget);
  });
  window.afxListen = {state: S, csv};  // for tests and the curious
  show("start");
})();
