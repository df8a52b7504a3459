// callqa review: flag navigation, playback and verdicts on the call page;
// the corrections export button on the list page. No libraries.
"use strict";

async function postJSON(url, body) {
  const response = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify(body || {})});
  const data = await response.json();
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

const exportButton = document.getElementById("export-corrections");
if (exportButton) {
  exportButton.addEventListener("click", async () => {
    const out = document.getElementById("export-result");
    out.textContent = "exporting…";
    try {
      const result = await postJSON("/export/corrections");
      out.textContent = `${result.rows} labelled utterances written to ${result.path}`;
      out.dataset.path = result.path;
    } catch (err) { out.textContent = "export failed: " + err.message; }
  });
}

if (typeof CALLQA !== "undefined") {
  const player = document.getElementById("player");
  const flags = Array.from(document.querySelectorAll("#flag-list li.flag"));
  const problems = flags.filter(li => li.classList.contains("problem"));
  const reviewer = document.getElementById("reviewer");
  reviewer.value = localStorage.getItem("callqa-reviewer") || "";
  reviewer.addEventListener("change", () => localStorage.setItem("callqa-reviewer", reviewer.value));
  let current = null;
  let addTurn = null;

  let stopAt = null;  // pause once the flagged moment and its context have played
  if (player) player.addEventListener("timeupdate", () => {
    if (stopAt !== null && player.currentTime >= stopAt) { player.pause(); stopAt = null; }
  });

  function seek(seconds, until) {
    if (!player) return;
    // Start a few seconds early so the listener hears what led up to the flag.
    const target = Math.max(0, seconds - CALLQA.context);
    const go = () => {
      player.currentTime = target;
      stopAt = until === undefined ? null : until + CALLQA.context;
      player.play().catch(() => {});
    };
    if (player.readyState >= 1) go(); else player.addEventListener("loadedmetadata", go, {once: true});
  }

  function pickTurn(turnId) {
    addTurn = turnId;
    document.getElementById("add-turn").textContent = "#" + turnId;
    document.getElementById("add-flag").disabled = false;
  }

  function select(li) {
    if (current) current.classList.remove("current");
    document.querySelectorAll("tr.current").forEach(tr => tr.classList.remove("current"));
    current = li;
    li.classList.add("current");
    const row = document.getElementById("turn-" + li.dataset.turn);
    row.classList.add("current");
    row.scrollIntoView({block: "center"});
    li.scrollIntoView({block: "nearest"});
    pickTurn(li.dataset.turn);
    document.getElementById("current").textContent =
      `${li.querySelector(".label").textContent} · ${li.querySelector(".clock").textContent} · ` +
      `${li.querySelector(".snippet").textContent} ${li.querySelector(".verdict").textContent}`;
    document.getElementById("confirm-flag").disabled = false;
    document.getElementById("reject-flag").disabled = false;
    if (li.dataset.start !== undefined) seek(parseFloat(li.dataset.start), parseFloat(li.dataset.end));
  }

  function step(direction) {
    if (!problems.length) return;
    const at = problems.indexOf(current);
    const next = at < 0 ? (direction > 0 ? 0 : problems.length - 1)
                        : (at + direction + problems.length) % problems.length;
    select(problems[next]);
  }

  flags.forEach(li => li.addEventListener("click", () => select(li)));
  // Marks in the transcript and event lines select their flag too.
  document.querySelectorAll("tr[data-turn] mark").forEach(mark => mark.addEventListener("click", () => {
    const turn = mark.closest("tr").dataset.turn;
    const li = flags.find(f => f.dataset.turn === turn && f.dataset.label === mark.title);
    if (li) select(li);
  }));
  document.querySelectorAll(".flag-ref").forEach(div => div.addEventListener("click", () => {
    const li = flags.find(f => f.dataset.key === div.dataset.key);
    if (li) select(li);
  }));
  document.querySelectorAll("tr[data-turn] td.time").forEach(td => td.addEventListener("click", () => {
    const row = td.closest("tr");
    pickTurn(row.dataset.turn);
    if (row.dataset.start !== undefined) seek(parseFloat(row.dataset.start) + CALLQA.context);
  }));

  document.getElementById("next-flag").addEventListener("click", () => step(1));
  document.getElementById("prev-flag").addEventListener("click", () => step(-1));
  document.addEventListener("keydown", event => {
    if (event.target.matches("input, select, textarea")) return;
    if (event.key === "n" || event.key === "j") step(1);
    if (event.key === "p" || event.key === "k") step(-1);
    if (event.key === "c") judge("confirm");
    if (event.key === "x") judge("reject");
  });

  function showScores(result) {
    const human = result.human;
    document.getElementById("human-total").textContent = `${human.total.toFixed(1)} ${human.grade}`;
    for (const [name, score] of Object.entries(human.dimensions)) {
      document.getElementById("human-" + name).textContent = score === null ? "N/A" : score.toFixed(0);
    }
    const status = document.getElementById("review-status");
    status.textContent = "human-reviewed";
    status.className = "badge reviewed";
  }

  async function judge(verdict) {
    if (!current) return;
    const note = document.getElementById("note");
    const reason = verdict === "reject" ? document.getElementById("reject-reason").value : null;
    const result = await postJSON(`/verdicts/${encodeURIComponent(CALLQA.call_id)}`, {
      flag_key: current.dataset.key, label: current.dataset.label, turn_id: parseInt(current.dataset.turn),
      verdict: verdict, reason: reason, note: note.value, reviewer: reviewer.value});
    current.classList.remove("judged-confirm", "judged-reject");
    current.classList.add("judged-" + verdict);
    current.querySelector(".verdict").textContent =
      verdict + (reason ? ` (${reason.replace("_", " ")})` : "") + (note.value ? ": " + note.value : "");
    note.value = "";
    showScores(result);
  }

  document.getElementById("confirm-flag").addEventListener("click", () => judge("confirm"));
  document.getElementById("reject-flag").addEventListener("click", () => judge("reject"));
  document.getElementById("add-flag").addEventListener("click", async () => {
    const label = document.getElementById("add-label").value;
    const note = document.getElementById("note");
    const result = await postJSON(`/verdicts/${encodeURIComponent(CALLQA.call_id)}`, {
      flag_key: `added:${label}:${addTurn}`, label: label, turn_id: parseInt(addTurn), verdict: "add",
      note: note.value, reviewer: reviewer.value});
    showScores(result);
    location.reload();  // the new flag joins the list in call order
  });
}
