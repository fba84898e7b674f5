// Keeps the server-rendered page live. Without this script the page is complete but still.
"use strict";
// Set once per load: a test (or a curious person) can tell the page never reloaded.
window.rollwatchLoadedAt = Date.now();

(function () {
  const source = document.body.dataset.stream;
  if (!source || !window.EventSource) return;
  const live = document.getElementById("live");
  const timeline = document.getElementById("timeline");
  const rows = document.getElementById("targets-body");
  const es = new EventSource(source);
  es.onopen = () => { if (live) live.hidden = false; };
  es.onerror = () => { if (live) live.hidden = true; };
  es.addEventListener("event", (e) => {
    // An older page of the timeline stays the page it is.
    if (!timeline || !timeline.dataset.live) return;
    const holder = document.createElement("ol");
    holder.innerHTML = e.data;
    const item = holder.firstElementChild;
    if (!item || document.getElementById(item.id)) return;
    item.dataset.seenAtMs = String(Date.now());
    timeline.prepend(item);
    const empty = timeline.parentElement.querySelector(".empty");
    if (empty && empty.nextElementSibling === timeline) empty.remove();
  });
  es.addEventListener("targets", (e) => {
    if (rows) rows.innerHTML = e.data;
  });
})();
