// am2z dashboard: live updates and actions on top of server-rendered pages.
//
// - Live: the page follows the event stream named by <body data-events>; on each event it
//   fetches itself again and swaps every [data-region] element for the fresh one (at most
//   about twice a second), so what the server renders is the only rendering there is.
// - Actions: buttons with data-action POST to their data-url with the actions token as
//   `Authorization: Bearer`. The token is typed into the header's field and kept in this
//   tab's sessionStorage only; it never goes into a URL.
"use strict";

(function () {
  const TOKEN_KEY = "am2z-actions-token";
  const MIN_GAP_MS = 500;
  const body = document.body;

  // ---- Live updates ---------------------------------------------------------------------------
  let inFlight = false;
  let again = false;
  let lastRefresh = 0;
  let timer = null;

  function scheduleRefresh() {
    if (timer !== null) return;
    const wait = Math.max(0, lastRefresh + MIN_GAP_MS - Date.now());
    timer = setTimeout(function () {
      timer = null;
      refresh();
    }, wait);
  }

  async function refresh() {
    if (inFlight) {
      again = true;
      return;
    }
    inFlight = true;
    lastRefresh = Date.now();
    try {
      const response = await fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      for (const region of document.querySelectorAll("[data-region]")) {
        const next = fresh.querySelector('[data-region="' + region.dataset.region + '"]');
        if (next) region.replaceWith(document.adoptNode(next));
      }
      const rendered = fresh.getElementById("rendered");
      if (rendered) document.getElementById("rendered").textContent = rendered.textContent;
      showToken();
    } catch (error) {
      // The next event tries again.
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        scheduleRefresh();
      }
    }
  }

  function follow() {
    const url = body.dataset.events;
    const live = document.getElementById("live");
    if (!url || !window.EventSource) return;
    const source = new EventSource(url);
    const connected = function () {
      live.textContent = "live";
      live.classList.add("on");
    };
    // "hello" comes first: reload once to cover what happened before the stream opened.
    source.addEventListener("hello", function () {
      connected();
      scheduleRefresh();
    });
    source.addEventListener("lagged", scheduleRefresh);
    source.onmessage = function () {
      connected();
      scheduleRefresh();
    };
    source.onerror = function () {
      live.textContent = "reconnecting";
      live.classList.remove("on");
    };
  }

  // ---- Actions token --------------------------------------------------------------------------
  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function showToken() {
    const form = document.getElementById("token-form");
    if (!form) return;
    const unlocked = token() !== "";
    form.classList.toggle("unlocked", unlocked);
    document.getElementById("unlock").hidden = unlocked;
    document.getElementById("lock").hidden = !unlocked;
    for (const button of document.querySelectorAll("button.action")) {
      button.title = unlocked ? "" : "unlock actions with the token first";
    }
  }

  function setupToken() {
    const form = document.getElementById("token-form");
    if (!form) return;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const field = document.getElementById("token");
      const value = field.value.trim();
      field.value = "";
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      showToken();
    });
    document.getElementById("lock").addEventListener("click", function () {
      sessionStorage.removeItem(TOKEN_KEY);
      showToken();
    });
    showToken();
  }

  // ---- Actions --------------------------------------------------------------------------------
  function flash(message, bad, link) {
    const box = document.getElementById("flash");
    box.textContent = message;
    if (link) {
      const a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      a.id = "flash-link";
      box.append(" ", a);
    }
    box.classList.toggle("bad", !!bad);
    box.hidden = false;
  }

  async function act(button) {
    if (!token()) {
      flash("Type the actions token in the header first.", true);
      document.getElementById("token").focus();
      return;
    }
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const response = await fetch(button.dataset.url, {
        method: "POST",
        headers: { Authorization: "Bearer " + token() },
      });
      const answer = await response.json().catch(function () { return {}; });
      if (!response.ok) {
        flash("Refused (" + response.status + "): " + (answer.error || response.statusText), true);
        if (response.status === 403) {
          sessionStorage.removeItem(TOKEN_KEY);
          showToken();
        }
        return;
      }
      describe(button.dataset.action, answer);
      await refresh();
    } catch (error) {
      flash("The action failed: " + error, true);
    } finally {
      button.disabled = false;
    }
  }

  function describe(action, answer) {
    if (action === "retry") {
      const run = answer.run;
      const href = location.pathname.replace(/\/runs\/[0-9a-f]+$/, "/runs/" + run);
      const words = answer.outcome === "already_retried" ? "Already retried as" : "Retried as";
      flash(words, false, { href: href, text: run.slice(0, 8) + "…" });
    } else if (action === "cancel") {
      flash(answer.outcome === "cancelled" ? "Run cancelled." : "The run had already ended.");
    } else if (action === "stop") {
      flash("Session " + answer.stopped + " stopped.");
    }
  }

  document.addEventListener("click", function (event) {
    const button = event.target.closest("button.action");
    if (button) act(button);
  });

  setupToken();
  follow();
})();
