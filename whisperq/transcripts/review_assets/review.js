/* whisperq review pages: the index's table of calls, and a call's player and transcript.
 * No library, no request to anywhere: data files are scripts beside the page (file://
 * pages cannot fetch). Every value from a transcript goes into the page as text
 * (textContent), never as HTML. */
(function () {
  "use strict";

  const body = document.body;
  const WQ = (window.WQ = window.WQ || {});

  function clock(seconds) {
    const total = Math.max(0, Math.floor(seconds || 0));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + s : m + ":" + s;
  }

  function loadScript(src, onError) {
    const script = document.createElement("script");
    script.src = src;
    script.onerror = onError;
    document.head.appendChild(script);
  }

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  /* ---- the index: a table of calls ------------------------------------------------- */

  function index() {
    const chunks = Number(body.dataset.chunks || 0);
    const chunkRows = Number(body.dataset.chunkRows || 1000);
    const total = Number(body.dataset.calls || 0);
    const PAGE = 50;
    const rows = [];
    const texts = [];
    let rowChunks = 0;
    let textChunks = 0;
    let textWanted = false;
    let filtered = [];
    const state = { key: "p", dir: 1, page: 0, terms: [], filters: {} };

    const tbody = document.querySelector("#calls tbody");
    const status = document.getElementById("table-status");
    const pageNo = document.getElementById("page-no");
    const prev = document.getElementById("prev");
    const next = document.getElementById("next");
    const search = document.getElementById("search");
    const columns = Array.from(document.querySelectorAll("#calls thead th")).map(
      (th) => th.dataset.key
    );

    WQ.rows = function (chunk, list) {
      for (let i = 0; i < list.length; i++) {
        const row = list[i];
        row.k = chunk * chunkRows + i;
        row.pl = row.p.toLowerCase();
        rows.push(row);
      }
      rowChunks += 1;
      refresh(false);
      if (rowChunks < chunks) {
        // the rest in the background, one file after the other
        setTimeout(() => loadScript("data/calls-" + pad(rowChunks) + ".js", failed), 0);
      } else {
        WQ.allRowsMs = performance.now();
      }
    };

    WQ.text = function (chunk, list) {
      for (let i = 0; i < list.length; i++) texts[chunk * chunkRows + i] = list[i].toLowerCase();
      textChunks += 1;
      if (textChunks < chunks) loadScript("data/text-" + pad(textChunks) + ".js", failed);
      refresh(false);
    };

    function pad(n) {
      return String(n).padStart(4, "0");
    }

    function failed(event) {
      status.textContent = "Could not load " + event.target.src + ": is the data/ folder there?";
    }

    function wantText() {
      if (textWanted || !chunks) return;
      textWanted = true;
      loadScript("data/text-0000.js", failed);
    }

    function shareOf(row) {
      const speaker = state.filters.speaker;
      if (speaker !== undefined) {
        const at = (row.s || []).indexOf(speaker);
        return at < 0 ? null : row.t[at];
      }
      return row.t && row.t.length ? Math.max.apply(null, row.t) : null;
    }

    function sortValue(row, key) {
      switch (key) {
        case "p":
          return row.pl;
        case "l":
          return (row.l || [])[0] || null;
        case "t":
          return shareOf(row);
        case "c":
          return (row.c || []).join(", ") || null;
        default:
          return row[key] === undefined ? null : row[key];
      }
    }

    function matches(row) {
      const f = state.filters;
      if (f.status === "done" && row.f) return false;
      if (f.status === "failed" && !row.f) return false;
      if (f.speaker !== undefined && (row.s || []).indexOf(f.speaker) < 0) return false;
      if (f.language !== undefined && (row.l || []).indexOf(f.language) < 0) return false;
      if (f.category !== undefined && (row.c || []).indexOf(f.category) < 0) return false;
      if (state.terms.length) {
        const hay = row.pl + " " + (texts[row.k] || "");
        for (const term of state.terms) if (hay.indexOf(term) < 0) return false;
      }
      return true;
    }

    function refresh(toFirstPage) {
      filtered = rows.filter(matches);
      const key = state.key;
      const dir = state.dir;
      filtered.sort((a, b) => {
        const x = sortValue(a, key);
        const y = sortValue(b, key);
        if (x === y) return a.k - b.k;
        if (x === null) return 1; // empty last, either way
        if (y === null) return -1;
        return (x < y ? -1 : 1) * dir;
      });
      if (toFirstPage) state.page = 0;
      render();
    }

    function cell(tr, content, className) {
      const td = element("td", null, className);
      if (content instanceof Node) td.appendChild(content);
      else td.textContent = content === null || content === undefined ? "" : content;
      tr.appendChild(td);
      return td;
    }

    function talkShares(row) {
      const span = element("span");
      (row.s || []).forEach((speaker, i) => {
        if (i) span.appendChild(document.createTextNode(" · "));
        const name = speaker === null ? "unlabelled" : speaker;
        span.appendChild(element("span", name + " " + Math.round(row.t[i] * 100) + "%"));
      });
      return span;
    }

    function render() {
      const pages = Math.max(1, Math.ceil(filtered.length / PAGE));
      state.page = Math.min(state.page, pages - 1);
      const start = state.page * PAGE;
      const fragment = document.createDocumentFragment();
      for (const row of filtered.slice(start, start + PAGE)) {
        const tr = element("tr", null, row.f ? "failed" : "");
        for (const key of columns) {
          if (key === "p") {
            if (row.u) {
              const a = element("a", row.p);
              a.href = row.u;
              cell(tr, a, "path");
            } else cell(tr, row.p, "path");
          } else if (key === "f") {
            const td = cell(tr, row.f ? "failed" : "done", row.f ? "bad" : "ok");
            if (row.e) td.title = row.e;
          } else if (key === "d") cell(tr, row.d === null ? "" : clock(row.d), "num");
          else if (key === "l") cell(tr, (row.l || []).join(", "));
          else if (key === "t") cell(tr, talkShares(row));
          else if (key === "n") cell(tr, row.f ? "" : clock(row.n), "num");
          else if (key === "i") cell(tr, row.i, "num");
          else if (key === "r") cell(tr, row.r ? row.r : "", "num");
          else if (key === "c") cell(tr, (row.c || []).join(", "));
        }
        if (row.f && row.e) {
          tr.title = row.e;
        }
        fragment.appendChild(tr);
      }
      tbody.textContent = "";
      tbody.appendChild(fragment);
      const shown = filtered.length
        ? (start + 1).toLocaleString() + "–" + Math.min(start + PAGE, filtered.length).toLocaleString()
        : "0";
      let text = "Calls " + shown + " of " + filtered.length.toLocaleString();
      if (filtered.length !== rows.length) text += " (of " + rows.length.toLocaleString() + ")";
      if (rows.length < total) text += "; loading: " + rows.length.toLocaleString() + " of " + total.toLocaleString() + " read";
      if (state.terms.length && textChunks < chunks) text += "; searching the transcripts…";
      status.textContent = text + ".";
      pageNo.textContent = "page " + (state.page + 1) + " of " + pages;
      prev.disabled = state.page === 0;
      next.disabled = state.page >= pages - 1;
      body.dataset.shown = String(filtered.length);
      body.dataset.loaded = rows.length === total ? "all" : String(rows.length);
      body.dataset.searched = textChunks >= chunks || !state.terms.length ? "yes" : "no";
      body.dataset.query = state.terms.join(" ");
      if (!WQ.firstPageMs && rows.length) {
        WQ.firstPageMs = performance.now();
        body.dataset.ready = "1";
      }
    }

    document.querySelectorAll("#calls thead th button").forEach((button) => {
      button.addEventListener("click", () => {
        const key = button.parentNode.dataset.key;
        state.dir = state.key === key ? -state.dir : 1;
        state.key = key;
        document.querySelectorAll("#calls thead th").forEach((th) => {
          th.removeAttribute("aria-sort");
        });
        button.parentNode.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
        refresh(true);
      });
    });
    document.querySelectorAll("select[data-filter]").forEach((select) => {
      select.addEventListener("change", () => {
        const name = select.dataset.filter;
        if (select.value === "") delete state.filters[name];
        else state.filters[name] = name === "speaker" ? JSON.parse(select.value) : select.value;
        refresh(true);
      });
    });
    let typing = null;
    search.addEventListener("input", () => {
      wantText();
      clearTimeout(typing);
      typing = setTimeout(() => {
        state.terms = search.value.toLowerCase().split(/\s+/).filter(Boolean);
        refresh(true);
      }, 120);
    });
    prev.addEventListener("click", () => {
      state.page -= 1;
      render();
    });
    next.addEventListener("click", () => {
      state.page += 1;
      render();
    });
    if (chunks) loadScript("data/calls-0000.js", failed);
    else render();
  }

  /* ---- a call: player, transcript, timeline ---------------------------------------- */

  function call() {
    const player = document.getElementById("player");
    const duration = Number(body.dataset.duration || 0);
    const words = Array.from(document.querySelectorAll("#transcript .w"));
    const turns = Array.from(document.querySelectorAll("#transcript .turn"));
    const byStart = words
      .map((w) => ({ node: w, s: Number(w.dataset.s), e: Number(w.dataset.e) }))
      .sort((a, b) => a.s - b.s);
    const turnStarts = turns.map((t) => Number(t.dataset.s));
    const playhead = document.getElementById("playhead");
    const now = document.getElementById("now");
    const label = document.getElementById("source-label");
    let lit = [];
    let litTurn = null;
    let shownTime = 0; // where the page is when there is no audio
    let frame = null;

    function time() {
      return player ? player.currentTime : shownTime;
    }

    function seek(seconds) {
      const t = Math.max(0, Math.min(seconds, duration || seconds));
      shownTime = t;
      if (player) player.currentTime = t;
      update();
    }

    function saying(t) {
      // the last word starting at or before t, then back over the words still going on
      let lo = 0;
      let hi = byStart.length - 1;
      let last = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (byStart[mid].s <= t) {
          last = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      const found = [];
      for (let i = last; i >= 0 && i > last - 200; i--) {
        if (byStart[i].e > t) found.push(byStart[i].node);
      }
      return found;
    }

    function turnAt(t) {
      let found = -1;
      for (let i = 0; i < turnStarts.length; i++) {
        if (turnStarts[i] <= t + 0.001) found = i;
        else break;
      }
      return found;
    }

    function update() {
      const t = time();
      const words = saying(t);
      lit.forEach((w) => w.classList.remove("now"));
      words.forEach((w) => w.classList.add("now"));
      lit = words;
      const at = turnAt(t);
      const turn = at >= 0 && Number(turns[at].dataset.e) >= t ? turns[at] : null;
      if (turn !== litTurn) {
        if (litTurn) litTurn.classList.remove("current");
        if (turn) turn.classList.add("current");
        litTurn = turn;
      }
      if (playhead && duration) playhead.style.left = Math.min(100, (t / duration) * 100) + "%";
      if (now) now.textContent = clock(t);
    }

    function tick() {
      update();
      frame = player && !player.paused ? requestAnimationFrame(tick) : null;
    }

    function toggle() {
      if (!player) return;
      if (player.paused) {
        const playing = player.play();
        if (playing && playing.catch) playing.catch(() => {});
      } else player.pause();
    }

    function moveTurn(step) {
      if (!turns.length) return;
      const t = time();
      const at = turnAt(t);
      let target;
      if (step > 0) target = at + 1;
      else target = at > 0 && t - turnStarts[at] < 1 ? at - 1 : Math.max(at, 0);
      target = Math.max(0, Math.min(turns.length - 1, target));
      seek(turnStarts[target]);
      turns[target].scrollIntoView({ block: "nearest" });
    }

    if (player) {
      player.addEventListener("timeupdate", update);
      player.addEventListener("seeked", update);
      player.addEventListener("play", () => {
        if (!frame) frame = requestAnimationFrame(tick);
      });
      player.addEventListener("pause", update);
    }

    const transcript = document.getElementById("transcript");
    if (transcript) {
      transcript.addEventListener("click", (event) => {
        const word = event.target.closest(".w");
        if (word) {
          seek(Number(word.dataset.s));
          return;
        }
        const turn = event.target.closest(".turn");
        if (turn) seek(Number(turn.dataset.s));
      });
    }
    document.querySelectorAll(".track").forEach((track) => {
      track.addEventListener("click", (event) => {
        const box = track.getBoundingClientRect();
        if (box.width > 0) seek(((event.clientX - box.left) / box.width) * duration);
      });
    });
    document.querySelectorAll("[data-seek]").forEach((button) => {
      button.addEventListener("click", () => seek(Number(button.dataset.seek)));
    });
    document.querySelectorAll(".sources .source").forEach((button) => {
      button.addEventListener("click", () => {
        const t = time();
        const wasPlaying = player && !player.paused;
        player.src = button.dataset.src;
        player.addEventListener(
          "loadedmetadata",
          () => {
            player.currentTime = t;
            if (wasPlaying) toggle();
          },
          { once: true }
        );
        document.querySelectorAll(".sources .source").forEach((b) => b.classList.remove("on"));
        button.classList.add("on");
        if (label) label.textContent = button.textContent;
      });
    });
    document.addEventListener("keydown", (event) => {
      if (event.altKey || event.ctrlKey || event.metaKey) return;
      const target = event.target;
      const tag = target && target.tagName;
      if (tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || tag === "AUDIO") return;
      if (event.key === " " || event.key === "Spacebar") {
        event.preventDefault();
        toggle();
      } else if (event.key === "ArrowRight" || event.key === "ArrowDown") {
        event.preventDefault();
        moveTurn(1);
      } else if (event.key === "ArrowLeft" || event.key === "ArrowUp") {
        event.preventDefault();
        moveTurn(-1);
      }
    });
    // a button keeps the focus after a click: space must not click it again
    document.addEventListener("keyup", (event) => {
      if (event.key === " " && event.target.tagName === "BUTTON") event.preventDefault();
    });

    const hash = /^#t=([0-9.]+)$/.exec(location.hash);
    if (hash) seek(Number(hash[1]));
    else update();
    WQ.seek = seek;
    body.dataset.ready = "1";
  }

  if (body.dataset.page === "index") index();
  else if (body.dataset.page === "call") call();
})();
