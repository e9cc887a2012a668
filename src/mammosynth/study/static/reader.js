// Reader study page. Plain JS, no build step, nothing loaded from elsewhere.
// The token in the URL (/r/<token>) is sent as a Bearer header on every API call.
// Pixels arrive as raw 16-bit values, so window/level works on the full bit depth.
"use strict";

(function () {
  const token = decodeURIComponent((location.pathname.split("/")[2] || ""));
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const viewer = $("viewer");
  const FULL = 65535;

  const st = {
    current: null,       // {presentation_id, height, width}
    pixels: null,        // Uint16Array (height * width)
    offscreen: null,     // canvas holding the windowed 8-bit image at native size
    center: FULL / 2, width: FULL,
    zoom: 1, panX: 0, panY: 0,
    level: null, realism: null,
    realismRequired: false,
    activeRow: "level",
    busy: true,
    shownAt: 0,
  };

  function setStatus(text, isError) {
    const el = $("status");
    el.textContent = text || "";
    el.classList.toggle("error", !!isError);
  }

  async function api(path, options) {
    const opts = Object.assign({ headers: {} }, options || {});
    opts.headers = Object.assign({ Authorization: "Bearer " + token }, opts.headers);
    opts.cache = "no-store";
    const res = await fetch(path, opts);
    if (!res.ok) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
      const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
      err.status = res.status;
      throw err;
    }
    return res;
  }

  // ---- rendering -------------------------------------------------------------
  function windowImage() {
    const cur = st.current;
    if (!cur || !st.pixels) return;
    const w = cur.width, h = cur.height;
    if (!st.offscreen || st.offscreen.width !== w || st.offscreen.height !== h) {
      st.offscreen = document.createElement("canvas");
      st.offscreen.width = w;
      st.offscreen.height = h;
    }
    const octx = st.offscreen.getContext("2d");
    const img = octx.createImageData(w, h);
    const out = img.data;
    const lo = st.center - st.width / 2;
    const scale = 255 / Math.max(1, st.width);
    const px = st.pixels;
    for (let i = 0, j = 0; i < px.length; i++, j += 4) {
      let v = (px[i] - lo) * scale;
      v = v < 0 ? 0 : (v > 255 ? 255 : v);
      out[j] = out[j + 1] = out[j + 2] = v;
      out[j + 3] = 255;
    }
    octx.putImageData(img, 0, 0);
  }

  function fitScale() {
    if (!st.current) return 1;
    return Math.min(canvas.width / st.current.width, canvas.height / st.current.height) * 0.95;
  }

  function draw() {
    const dpr = window.devicePixelRatio || 1;
    const cw = Math.max(1, Math.round(viewer.clientWidth * dpr));
    const ch = Math.max(1, Math.round(viewer.clientHeight * dpr));
    if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, cw, ch);
    if (!st.offscreen || !st.current) return;
    const s = fitScale() * st.zoom;
    const w = st.current.width * s, h = st.current.height * s;
    const x = (cw - w) / 2 + st.panX * dpr, y = (ch - h) / 2 + st.panY * dpr;
    ctx.imageSmoothingEnabled = s < 6;  // at high magnification show the pixels as they are
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(st.offscreen, x, y, w, h);
    $("readout").textContent = "Zoom " + (st.zoom * 100).toFixed(0) + "%  ·  L " +
      (100 * st.center / FULL).toFixed(0) + "%  W " + (100 * st.width / FULL).toFixed(0) + "%";
  }

  let frame = 0;
  function redraw(rewindow) {
    if (rewindow) st.needWindow = true;
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      if (st.needWindow) { windowImage(); st.needWindow = false; }
      draw();
    });
  }

  function syncSliders() {
    $("wl-center").value = Math.round(1000 * st.center / FULL);
    $("wl-width").value = Math.max(1, Math.round(1000 * st.width / FULL));
    $("wl-center-out").textContent = (100 * st.center / FULL).toFixed(0) + "%";
    $("wl-width-out").textContent = (100 * st.width / FULL).toFixed(0) + "%";
  }

  function resetView() {
    st.center = FULL / 2; st.width = FULL; st.zoom = 1; st.panX = 0; st.panY = 0;
    syncSliders();
    redraw(true);
  }

  // ---- answers ---------------------------------------------------------------
  function setActiveRow(row) {
    st.activeRow = st.realismRequired ? row : "level";
    $("level-group").classList.toggle("active", st.activeRow === "level");
    $("realism-group").classList.toggle("active", st.activeRow === "realism");
  }

  function updateChoices() {
    document.querySelectorAll("[data-level]").forEach((b) => {
      b.classList.toggle("selected", Number(b.dataset.level) === st.level);
      b.disabled = st.busy;
    });
    document.querySelectorAll("[data-realism]").forEach((b) => {
      b.classList.toggle("selected", Number(b.dataset.realism) === st.realism);
      b.disabled = st.busy;
    });
    const ready = st.level !== null && (!st.realismRequired || st.realism !== null);
    $("submit").disabled = st.busy || !ready;
  }

  function chooseLevel(level) {
    if (st.busy) return;
    st.level = level;
    if (st.realismRequired) setActiveRow("realism");
    updateChoices();
  }

  function chooseRealism(score) {
    if (st.busy) return;
    st.realism = score;
    updateChoices();
  }

  function showProgress(state) {
    const pct = state.total ? (100 * state.answered / state.total) : 0;
    $("progress-fill").style.width = pct.toFixed(1) + "%";
    $("progress-text").textContent = state.answered + " / " + state.total;
    $("reader-name").textContent = state.reader;
  }

  async function showState(state) {
    showProgress(state);
    st.realismRequired = !!state.realism_score;
    $("realism-group").classList.toggle("hidden", !st.realismRequired);
    if (state.done) {
      $("layout").classList.add("hidden");
      $("done").classList.remove("hidden");
      $("done-text").textContent = "All " + state.total + " images are answered and saved. You can close this window.";
      st.busy = true;
      return;
    }
    st.busy = true;
    updateChoices();
    $("overlay").classList.remove("hidden");
    const cur = state.current;
    const res = await api("/api/image/" + cur.presentation_id);
    const buf = await res.arrayBuffer();
    if (buf.byteLength !== cur.width * cur.height * 2) throw new Error("image size mismatch");
    st.current = cur;
    st.pixels = new Uint16Array(buf);
    st.level = null; st.realism = null;
    setActiveRow("level");
    resetView();
    $("overlay").classList.add("hidden");
    st.busy = false;
    st.shownAt = performance.now();
    updateChoices();
    document.body.dataset.presentation = cur.presentation_id;  // lets tests wait for the next image
  }

  async function submit() {
    if (st.busy || st.level === null || (st.realismRequired && st.realism === null)) return;
    st.busy = true;
    updateChoices();
    setStatus("Saving…");
    const body = {
      presentation_id: st.current.presentation_id,
      level: st.level,
      elapsed_ms: Math.round(performance.now() - st.shownAt),
    };
    if (st.realismRequired) body.realism = st.realism;
    try {
      const res = await api("/api/answers", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const state = await res.json();  // the server has committed the answer at this point
      setStatus("Saved.");
      await showState(state);
    } catch (err) {
      if (err.status === 409) {  // already saved (e.g. a second tab): continue from the server's position
        setStatus("That answer was already saved; continuing.");
        await load();
        return;
      }
      setStatus("Not saved: " + err.message + ". Please try again.", true);
      st.busy = false;
      updateChoices();
    }
  }

  async function load() {
    try {
      const res = await api("/api/state");
      await showState(await res.json());
    } catch (err) {
      setStatus("Could not load the study: " + err.message, true);
      $("overlay").textContent = err.status === 403 || err.status === 401 ? "Link not recognised." : "Could not load the image.";
    }
  }

  // ---- interaction -----------------------------------------------------------
  let drag = null;
  viewer.addEventListener("contextmenu", (e) => e.preventDefault());
  viewer.addEventListener("mousedown", (e) => {
    drag = { x: e.clientX, y: e.clientY, button: e.button, center: st.center, width: st.width, panX: st.panX, panY: st.panY };
    viewer.classList.add(e.button === 2 ? "windowing" : "dragging");
    e.preventDefault();
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (drag.button === 2) {  // right-drag: horizontal = window width, vertical = level
      st.width = Math.min(FULL, Math.max(64, drag.width * Math.exp(dx / 200)));
      st.center = Math.min(FULL, Math.max(0, drag.center - dy * FULL / 600));
      syncSliders();
      redraw(true);
    } else {
      st.panX = drag.panX + dx; st.panY = drag.panY + dy;
      redraw(false);
    }
  });
  window.addEventListener("mouseup", () => {
    drag = null;
    viewer.classList.remove("windowing", "dragging");
  });
  viewer.addEventListener("wheel", (e) => {
    e.preventDefault();
    const rect = viewer.getBoundingClientRect();
    const mx = e.clientX - rect.left - rect.width / 2, my = e.clientY - rect.top - rect.height / 2;
    const factor = Math.exp(-e.deltaY / 500);
    const zoom = Math.min(40, Math.max(0.25, st.zoom * factor));
    const k = zoom / st.zoom;
    // keep the image point under the cursor fixed while zooming
    st.panX = mx - (mx - st.panX) * k; st.panY = my - (my - st.panY) * k;
    st.zoom = zoom;
    redraw(false);
  }, { passive: false });

  $("wl-center").addEventListener("input", (e) => { st.center = FULL * Number(e.target.value) / 1000; syncSliders(); redraw(true); });
  $("wl-width").addEventListener("input", (e) => { st.width = Math.max(64, FULL * Number(e.target.value) / 1000); syncSliders(); redraw(true); });
  $("reset").addEventListener("click", resetView);
  $("submit").addEventListener("click", submit);
  document.querySelectorAll("[data-level]").forEach((b) => b.addEventListener("click", () => { setActiveRow("level"); chooseLevel(Number(b.dataset.level)); }));
  document.querySelectorAll("[data-realism]").forEach((b) => b.addEventListener("click", () => { setActiveRow("realism"); chooseRealism(Number(b.dataset.realism)); }));
  $("level-group").addEventListener("click", () => setActiveRow("level"));
  $("realism-group").addEventListener("click", () => setActiveRow("realism"));

  window.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const digit = /^Digit([1-6])$/.exec(e.code) || /^Numpad([1-6])$/.exec(e.code);
    if (digit) {
      const n = Number(digit[1]);
      if (st.activeRow === "realism") { if (n <= 5) chooseRealism(n); } else chooseLevel(n);
      e.preventDefault();
    } else if (e.key === "Enter") {
      submit();
      e.preventDefault();
    } else if (e.key === "r" || e.key === "R") {
      resetView();
    } else if (e.key === "Tab" && st.realismRequired) {
      setActiveRow(st.activeRow === "level" ? "realism" : "level");
      e.preventDefault();
    } else if (e.key === "+" || e.key === "=") {
      st.zoom = Math.min(40, st.zoom * 1.25); redraw(false);
    } else if (e.key === "-") {
      st.zoom = Math.max(0.25, st.zoom / 1.25); redraw(false);
    }
  });
  window.addEventListener("resize", () => redraw(false));

  syncSliders();
  load();
})();
