// The hosted waiting-room page: renders what the SDK reports and nothing else.
import { GatekeepClient } from "/sdk/gatekeep.js";

const config = JSON.parse(document.getElementById("gatekeep-config").textContent);
const strings = JSON.parse(document.getElementById("gatekeep-strings").textContent);

// Seconds between two position announcements for screen readers; state changes are always read.
const ANNOUNCE_INTERVAL_MS = 30000;
// Time the "your turn" screen stays before the redirect, so people see what happened.
const REDIRECT_DELAY_MS = 1500;

const $ = (id) => document.getElementById(id);
const card = document.querySelector("main.card");
const firstPositionKey = `gatekeep:first-position:${config.event_id}`;

let lastAnnouncedState = null;
let lastAnnouncedAtMs = 0;
let countdownTimer = null;
let redirectTimer = null;

function text(key, values = {}) {
  const template = strings[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
}

function show(element, visible) {
  element.hidden = !visible;
}

function announce(message) {
  $("live").textContent = message;
  lastAnnouncedAtMs = Date.now();
}

/** Format an ETA as a range, wider for longer waits, because it is an estimate. */
function etaRange(etaS) {
  if (etaS == null) {
    return text("eta_unknown");
  }
  if (etaS < 60) {
    return text("eta_less_than_minute");
  }
  const low = Math.max(1, Math.floor((etaS * 0.8) / 60));
  const high = Math.max(low + 1, Math.ceil((etaS * 1.25) / 60));
  return text("eta_minutes", { low, high });
}

function formatCountdown(ms) {
  const totalS = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(totalS / 3600);
  const minutes = Math.floor((totalS % 3600) / 60);
  const seconds = totalS % 60;
  const pad = (n) => String(n).padStart(2, "0");
  return hours > 0 ? `${hours}:${pad(minutes)}:${pad(seconds)}` : `${minutes}:${pad(seconds)}`;
}

/** Return when the event opens on this device's clock: the service's countdown is preferred,
 * because the device clock may be wrong. */
function opensAtMs(event) {
  if (Number.isFinite(event.opens_in_s)) {
    return Date.now() + event.opens_in_s * 1000;
  }
  if (typeof event.opens_at === "string") {
    const parsed = Date.parse(event.opens_at);
    return Number.isNaN(parsed) ? null : parsed;
  }
  return null;
}

function renderEventState(event) {
  clearInterval(countdownTimer);
  const element = $("event-state");
  const state = event?.state;
  if (!state || state === "open") {
    show(element, false);
    return;
  }
  show(element, true);
  if (state === "paused") {
    element.textContent = text("event_paused");
  } else if (state === "scheduled") {
    const opensAt = opensAtMs(event);
    const tick = () => {
      const remaining = opensAt == null ? null : opensAt - Date.now();
      element.textContent = text("event_scheduled", {
        countdown: remaining == null ? "…" : formatCountdown(remaining),
      });
    };
    tick();
    countdownTimer = setInterval(tick, 1000);
  } else if (state === "closed") {
    element.textContent = text("event_closed_to_joins");
  } else if (state === "sold_out") {
    element.textContent = text("sold_out_detail");
  } else {
    element.textContent = event.message ?? text("event_state_other", { state });
  }
}

function renderWaiting(entry, event) {
  const position = entry.position;
  show($("progress-block"), position != null);
  if (position == null) {
    return;
  }
  const first = Math.max(position, Number(localStorage.getItem(firstPositionKey)) || 0);
  localStorage.setItem(firstPositionKey, String(first));
  const done = first <= 1 ? 100 : Math.round(((first - position) / (first - 1)) * 100);

  $("position").textContent = String(position);
  $("progress").setAttribute("aria-valuenow", String(done));
  $("progress").setAttribute("aria-valuetext", text("people_ahead", { count: position - 1 }));
  $("progress-fill").style.width = `${done}%`;
  const eventState = event?.state;
  if (eventState === "paused" || eventState === "scheduled") {
    $("eta").textContent = text(`eta_${eventState}`);
  } else {
    $("eta").textContent = etaRange(entry.eta_s);
  }

  if (Date.now() - lastAnnouncedAtMs > ANNOUNCE_INTERVAL_MS) {
    announce(text("announce_position", { position }));
  }
}

function redirectUrl(token) {
  if (!config.return_url) {
    return null;
  }
  const url = new URL(config.return_url);
  url.searchParams.set("gatekeep_token", token);
  return url.toString();
}

function renderConnection(status) {
  const element = $("connection");
  if (status.connection === "retrying") {
    const seconds = Math.max(1, Math.round((status.retryInMs ?? 1000) / 1000));
    element.textContent = text("connection_retrying", { seconds });
    show(element, true);
  } else if (status.connection === "reconnecting") {
    element.textContent = text("connection_reconnecting");
    show(element, true);
  } else if (status.connection === "live" || status.connection === "polling") {
    element.textContent = text(`connection_${status.connection}`);
    show(element, status.state === "waiting");
  } else {
    show(element, false);
  }

  const unavailable = status.connection === "retrying";
  $("problem").textContent = unavailable ? text("service_unavailable") : "";
  show($("problem"), unavailable);
}

function headlineKey(status) {
  if (status.state === "closed" && String(status.reason).includes("sold_out")) {
    return "sold_out";
  }
  return status.state;
}

function render(status) {
  card.dataset.state = status.state;
  card.dataset.connection = status.connection;
  const key = headlineKey(status);
  $("headline").textContent = text(key === "idle" ? "joining" : key);

  const detailKey = {
    joining: null,
    waiting: "waiting_detail",
    admitted: config.return_url ? "admitted_detail" : "admitted_no_redirect",
    expired: "expired_detail",
    left: "left_detail",
    closed: key === "sold_out" ? "sold_out_detail" : "closed_detail",
    error: "error_detail",
  }[status.state];
  $("detail").textContent = detailKey ? text(detailKey) : "";

  if (status.state === "waiting") {
    renderWaiting(status.entry ?? {}, status.event ?? status.entry?.event);
  } else {
    show($("progress-block"), false);
  }
  renderEventState(status.state === "waiting" ? status.event ?? status.entry?.event : null);
  renderConnection(status);

  if (["expired", "closed", "error", "left"].includes(status.state)) {
    // The service's own message explains what happened, so show it beside ours.
    const problem = $("problem");
    problem.textContent = status.message ?? "";
    show(problem, Boolean(status.message));
    offerJoinAgain(status.state);
  }

  if (status.state !== lastAnnouncedState) {
    lastAnnouncedState = status.state;
    announce([$("headline").textContent, $("detail").textContent].filter(Boolean).join(". "));
  }
}

function offerJoinAgain(state) {
  const link = $("redirect-link");
  if (state !== "expired" && state !== "left") {
    show($("redirect"), false);
    return;
  }
  link.textContent = text("join_again");
  link.href = location.pathname;
  show($("redirect"), true);
}

function onAdmitted(status) {
  const target = redirectUrl(status.entry.token);
  localStorage.removeItem(firstPositionKey);
  if (!target) {
    return;
  }
  const link = $("redirect-link");
  link.textContent = text("continue");
  link.href = target;
  show($("redirect"), true);
  clearTimeout(redirectTimer);
  redirectTimer = setTimeout(() => location.replace(target), REDIRECT_DELAY_MS);
}

$("position-label").textContent = text("position_label");
$("eta-label").textContent = text("eta_label");

const client = new GatekeepClient({ eventId: config.event_id, baseUrl: config.base_url });
client.on("status", render);
client.on("admitted", onAdmitted);
window.gatekeepClient = client;
client.start();
