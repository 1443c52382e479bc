// midefend review: forced-choice trials. Two backends: the local server (fetch under this page's
// secret path) or an exported page (window.MIDEFEND_REVIEW, answers kept in the page and downloaded
// as JSON). The page only knows trial ids, candidate slots and image URLs, never a class.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };

  function serverBackend() {
    function get(path) {
      return fetch(path, { cache: "no-store" }).then(function (r) {
        return r.json().then(function (body) { if (!r.ok) throw new Error(body.error || r.statusText); return body; });
      });
    }
    return {
      state: function () { return get("api/state"); },
      trial: function (n) { return get("api/trial/" + n); },
      answer: function (id, slot) {
        return fetch("api/answer", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ id: id, slot: slot }) })
          .then(function (r) { return r.json().then(function (body) { if (!r.ok) throw new Error(body.error || r.statusText); return body; }); });
      },
      exported: false,
    };
  }

  function exportBackend(data) {
    var storeKey = "midefend-review-" + data.review;
    var answers = {};
    try { answers = JSON.parse(window.localStorage.getItem(storeKey) || "{}"); } catch (e) { answers = {}; }
    function state() {
      var next = data.trials.findIndex(function (t) { return !(t.id in answers); });
      var open = [];
      data.trials.forEach(function (t, i) { if (!(t.id in answers)) open.push(i); });
      return { total: data.trials.length, answered: data.trials.length - open.length, next: next < 0 ? data.trials.length : next, open: open, k: data.k };
    }
    return {
      state: function () { return Promise.resolve(state()); },
      trial: function (n) {
        var t = data.trials[n], a = answers[t.id];
        return Promise.resolve({ id: t.id, number: n, total: data.trials.length, reconstruction: t.reconstruction, candidates: t.candidates,
          answer: a === undefined ? null : (a === null ? "none" : a) });
      },
      answer: function (id, slot) {
        answers[id] = slot;
        try { window.localStorage.setItem(storeKey, JSON.stringify(answers)); } catch (e) { /* file:// without storage: kept in memory */ }
        return Promise.resolve(state());
      },
      download: function () {
        var blob = new Blob([JSON.stringify({ format: "midefend-review-answers", version: 1, review: data.review, answers: answers }, null, 1)],
          { type: "application/json" });
        var link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = "answers-" + data.review + ".json";
        document.body.appendChild(link); link.click(); link.remove();
      },
      exported: true,
    };
  }

  var api = window.MIDEFEND_REVIEW ? exportBackend(window.MIDEFEND_REVIEW) : serverBackend();
  var current = null, total = 0, k = 4, busy = false;

  function showError(e) { $("error").textContent = "error: " + (e && e.message ? e.message : e); $("error").hidden = false; busy = false; }

  function progress(st) {
    total = st.total; k = st.k || k;
    var pct = total ? Math.round(100 * st.answered / total) : 100;
    $("bar").style.width = pct + "%";
    $("progress").setAttribute("aria-valuemax", String(total));
    $("progress").setAttribute("aria-valuenow", String(st.answered));
    $("count").textContent = st.answered + " of " + total + " answered";
    $("maxkey").textContent = String(k);
  }

  function render(t) {
    current = t;
    $("done").hidden = true; $("trial").hidden = false;
    $("number").textContent = (t.number + 1) + " / " + t.total;
    $("recon").src = t.reconstruction;
    var box = $("candidates");
    box.textContent = "";
    t.candidates.forEach(function (c) {
      var card = document.createElement("button");
      card.type = "button"; card.className = "candidate"; card.dataset.slot = String(c.slot);
      if (t.answer === c.slot) card.classList.add("chosen");
      var key = document.createElement("span");
      key.className = "key"; key.textContent = String(c.slot + 1) + " · person " + String.fromCharCode(65 + c.slot);
      var shots = document.createElement("div");
      shots.className = "shots";
      c.images.forEach(function (src) { var img = document.createElement("img"); img.src = src; img.alt = "a training image of this person"; shots.appendChild(img); });
      card.appendChild(key); card.appendChild(shots);
      card.addEventListener("click", function () { choose(c.slot); });
      box.appendChild(card);
    });
    $("none").classList.toggle("chosen", t.answer === "none");
    busy = false;
  }

  function showDone() {
    current = { number: total, candidates: [] };
    $("trial").hidden = true; $("done").hidden = false;
    if (api.exported) { $("download").hidden = false; $("done-text").textContent = "Download your answers and send the file back (← goes back to change an answer)."; }
    busy = false;
  }

  function go(n) {
    if (n >= total) { showDone(); return Promise.resolve(); }
    busy = true;
    return api.trial(n).then(render).catch(showError);
  }

  function choose(slot) {
    if (busy || !current || current.id === undefined) return;
    if (slot !== null && (slot < 0 || slot >= current.candidates.length)) return;
    busy = true;
    var from = current.number;
    api.answer(current.id, slot).then(function (st) {
      progress(st);
      // the next unanswered trial after this one, else the first unanswered, else done
      var later = st.open.filter(function (i) { return i > from; });
      return go(later.length ? later[0] : (st.open.length ? st.open[0] : total));
    }).catch(showError);
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key >= "1" && ev.key <= "9") { choose(Number(ev.key) - 1); ev.preventDefault(); }
    else if (ev.key === "0") { choose(null); ev.preventDefault(); }
    else if (ev.key === "ArrowLeft" && current && current.number > 0 && !busy) { go(current.number - 1); ev.preventDefault(); }
    else if (ev.key === "ArrowRight" && current && current.number < total && !busy) { go(current.number + 1); ev.preventDefault(); }
  });
  $("none").addEventListener("click", function () { choose(null); });
  if (api.download) $("download").addEventListener("click", api.download);
  if (api.exported) $("download").hidden = false;

  api.state().then(function (st) { progress(st); return go(st.next); }).catch(showError);
})();
