// Gatekeep browser SDK: a plain ES module, no dependencies and no build step.
//
//   import { GatekeepClient } from "/sdk/gatekeep.js";
//   const client = new GatekeepClient({ eventId: "launch" });
//   client.on("status", (status) => render(status));
//   client.on("admitted", (status) => location.assign(origin + "?gatekeep_token=" + status.token));
//   await client.start();
//
// docs/client-protocol.md describes the protocol, the state machine and the retry rules.
// `interpret` and `backoffDelayMs` are exported so that the shared test vectors can check them.

export const STATES = Object.freeze([
  "idle", "joining", "waiting", "admitted", "expired", "left", "closed", "error",
]);

// States after which the client stops: nothing the service sends later can change them.
export const FINAL_STATES = Object.freeze(["admitted", "expired", "left", "closed", "error"]);

export const DEFAULT_BACKOFF = Object.freeze({ baseMs: 500, capMs: 30000 });

// Entry statuses the service sends today and the client state each one leads to.
const ENTRY_STATES = {
  waiting: "waiting", admitted: "admitted", expired: "expired", left: "left",
  closed: "closed", sold_out: "closed",
};

// Error codes whose meaning is known; any other code is read from its HTTP status.
const ERROR_STATES = {
  event_disabled: "closed",
  event_closed: "closed",
  sold_out: "closed",
  event_sold_out: "closed",
  queue_entry_expired: "expired",
  queue_entry_left: "left",
  queue_entry_closed: "closed",
  queue_entry_sold_out: "closed",
  queue_entry_not_found: "expired",
};

/**
 * Decide what one response means for the client: a new state, or a retry.
 *
 * `call` is "join", "status", "heartbeat", "leave", "event" or "stream". `httpStatus` is the
 * HTTP status, 0 for a network failure. `body` is the parsed JSON or null, and `retryAfterS`
 * the Retry-After header in seconds or null.
 * Returns {action: "state", state, reason, message} or {action: "retry", reason, message,
 * retryAfterS}. It never invents a state: every state comes from a status or error the
 * service sent.
 */
export function interpret(call, httpStatus, body, retryAfterS = null) {
  if (httpStatus >= 200 && httpStatus < 300 && body && typeof body === "object") {
    if (call === "event") {
      return eventState(body);
    }
    return entryState(body);
  }

  const error = body && typeof body === "object" && body.error ? body.error : {};
  const code = typeof error.code === "string" ? error.code : null;
  const message = typeof error.message === "string" ? error.message : null;
  const retryAfter = retryAfterS ?? (Number.isFinite(error.retry_after_s) ? error.retry_after_s : null);

  if (httpStatus === 0 || httpStatus === 408 || httpStatus === 429 || httpStatus >= 500) {
    return { action: "retry", reason: code || (httpStatus === 0 ? "network_error" : `http_${httpStatus}`),
      message, retryAfterS: retryAfter };
  }
  if (code && ERROR_STATES[code]) {
    return { action: "state", state: ERROR_STATES[code], reason: code, message };
  }
  if (httpStatus === 410) {
    return { action: "state", state: "expired", reason: code || "gone", message };
  }
  if (httpStatus === 409) {
    return { action: "state", state: "closed", reason: code || "conflict", message };
  }
  return { action: "state", state: "error", reason: code || `http_${httpStatus}`, message };
}

function eventState(body) {
  const eventStateName = typeof body.state === "string" ? body.state : "unknown";
  return { action: "event", eventState: eventStateName, reason: eventStateName,
    message: body.message ?? null };
}

function entryState(body) {
  // The entry's own status decides the state. The event's state (paused, scheduled, ...) is
  // shown beside it, because a waiting entry keeps its place whatever the event does.
  const status = body.status;
  if (Object.hasOwn(ENTRY_STATES, status)) {
    if (status === "admitted" && typeof body.token !== "string") {
      return { action: "state", state: "error", reason: "missing_token",
        message: "the service reported admission without a token" };
    }
    return { action: "state", state: ENTRY_STATES[status], reason: status, message: null };
  }
  // A status this SDK does not know yet: stop and show the service's message.
  return { action: "state", state: "error", reason: `unknown_status:${String(status)}`,
    message: body.message ?? `the service reported status ${JSON.stringify(status)}` };
}

/**
 * Return the delay before retry number `attempt` (0 for the first retry), in milliseconds.
 *
 * Full jitter: a uniform draw from [0, min(capMs, baseMs * 2^attempt)). A Retry-After from
 * the service is a floor: the delay is Retry-After plus that draw.
 */
export function backoffDelayMs(attempt, retryAfterS = null, random = Math.random, options = DEFAULT_BACKOFF) {
  const ceilingMs = Math.min(options.capMs, options.baseMs * 2 ** Math.max(0, attempt));
  const jitterMs = Math.floor(random() * ceilingMs);
  const floorMs = retryAfterS != null && retryAfterS > 0 ? retryAfterS * 1000 : 0;
  return floorMs + jitterMs;
}

/** Return the Retry-After header of a fetch Response in seconds, or null. */
export function retryAfterSeconds(headerValue, nowMs = Date.now()) {
  if (headerValue == null || headerValue === "") {
    return null;
  }
  if (/^\d+$/.test(headerValue.trim())) {
    return Number(headerValue.trim());
  }
  const dateMs = Date.parse(headerValue);
  return Number.isNaN(dateMs) ? null : Math.max(0, Math.ceil((dateMs - nowMs) / 1000));
}

function randomId() {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** An in-memory storage for environments without localStorage; a reload loses it. */
export class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}

function defaultStorage() {
  try {
    const storage = globalThis.localStorage;
    const probe = "gatekeep:probe";
    storage.setItem(probe, "1");
    storage.removeItem(probe);
    return storage;
  } catch {
    return new MemoryStorage();
  }
}

/**
 * A queue client for one event: join (or restore a saved place), follow the entry by stream
 * or polling, keep it alive, and report admission.
 *
 * Events (subscribe with `on`): "status" with every status object, "admitted" once with the
 * admitted status, "final" once when a final state is reached.
 */
export class GatekeepClient {
  constructor(options) {
    if (!options || typeof options.eventId !== "string" || options.eventId === "") {
      throw new TypeError("GatekeepClient needs options.eventId, the id of the event to join");
    }
    this.eventId = options.eventId;
    this.baseUrl = (options.baseUrl ?? "").replace(/\/+$/, "");
    this.storage = options.storage ?? defaultStorage();
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.EventSource = options.EventSource === undefined ? globalThis.EventSource : options.EventSource;
    this.useStream = options.useStream ?? true;
    this.random = options.random ?? Math.random;
    this.backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.minPollMs = options.minPollMs ?? 250;
    this.userId = options.userId ?? null;
    this.priorityGrant = options.priorityGrant ?? null;
    this.listeners = new Map();
    this.status = { state: "idle", connection: "idle", entry: null, event: null, reason: null,
      message: null, retryInMs: null };
    this.queueId = null;
    this.stopped = false;
    this.timer = null;
    this.source = null;
    this.failures = 0;
    this.streamFailures = 0;
    this.placeKey = `gatekeep:place:${this.eventId}`;
    this.deviceKey = "gatekeep:device";
    this.deviceId = options.deviceId ?? this.loadDeviceId();
  }

  on(type, listener) {
    if (!this.listeners.has(type)) {
      this.listeners.set(type, new Set());
    }
    this.listeners.get(type).add(listener);
    return () => this.listeners.get(type).delete(listener);
  }

  emit(type, value) {
    for (const listener of this.listeners.get(type) ?? []) {
      try {
        listener(value);
      } catch (error) {
        console.error("gatekeep: a listener failed", error);
      }
    }
  }

  loadDeviceId() {
    let deviceId = this.storage.getItem(this.deviceKey);
    if (!deviceId || !/^[A-Za-z0-9._:-]{1,128}$/.test(deviceId)) {
      deviceId = `web-${randomId()}`;
      this.storage.setItem(this.deviceKey, deviceId);
    }
    return deviceId;
  }

  /** Return the saved place of this event ({queue_id, token, session_expires_at_ms}) or null. */
  savedPlace() {
    try {
      const place = JSON.parse(this.storage.getItem(this.placeKey) ?? "null");
      if (!place || typeof place.queue_id !== "string") {
        return null;
      }
      if (place.token && place.session_expires_at_ms && place.session_expires_at_ms < Date.now()) {
        this.storage.removeItem(this.placeKey);
        return null;
      }
      return place;
    } catch {
      return null;
    }
  }

  savePlace(entry) {
    const place = { queue_id: entry.queue_id, event_id: this.eventId, saved_at_ms: Date.now() };
    if (entry.token) {
      place.token = entry.token;
      place.session_expires_at_ms = entry.session_expires_at_ms ?? null;
    }
    this.storage.setItem(this.placeKey, JSON.stringify(place));
  }

  forgetPlace() {
    this.storage.removeItem(this.placeKey);
  }

  /** Join, or resume the saved place, then follow the entry until a final state. */
  async start() {
    this.stopped = false;
    const place = this.savedPlace();
    if (place && place.token) {
      // Admitted before a reload: the saved token is still within its session.
      const entry = { queue_id: place.queue_id, event_id: this.eventId, status: "admitted",
        token: place.token, session_expires_at_ms: place.session_expires_at_ms };
      this.queueId = place.queue_id;
      this.apply(entry, interpret("status", 200, entry), "restored");
      return;
    }
    if (place) {
      this.queueId = place.queue_id;
      this.update({ state: "joining", connection: "connecting" });
      this.pollOnce();
      return;
    }
    this.update({ state: "joining", connection: "connecting" });
    this.joinOnce();
  }

  /** Stop all network activity; the saved place stays, so a later start() resumes it. */
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.closeStream();
  }

  /** Leave the queue (or end the admitted session) and forget the saved place. */
  async leave() {
    const queueId = this.queueId;
    this.stop();
    this.forgetPlace();
    if (!queueId) {
      return;
    }
    try {
      const response = await this.fetch(`${this.baseUrl}/v1/queue/${encodeURIComponent(queueId)}`,
        { method: "DELETE" });
      const body = await readJson(response);
      this.apply(body, interpret("leave", response.status, body), this.status.connection);
    } catch {
      // Leaving is a courtesy, because an entry whose leave fails expires after its heartbeat
      // timeout.
    }
  }

  update(changes) {
    this.status = { ...this.status, ...changes };
    this.emit("status", this.status);
  }

  async request(call, method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    try {
      const response = await this.fetch(this.baseUrl + path, init);
      const parsed = await readJson(response);
      const retryAfterS = retryAfterSeconds(response.headers.get("Retry-After"));
      return { httpStatus: response.status, body: parsed,
        outcome: interpret(call, response.status, parsed, retryAfterS) };
    } catch {
      return { httpStatus: 0, body: null, outcome: interpret(call, 0, null) };
    }
  }

  async joinOnce() {
    const body = { device_id: this.deviceId };
    if (this.userId) {
      body.user_id = this.userId;
    }
    if (this.priorityGrant) {
      body.priority_grant = this.priorityGrant;
    }
    const result = await this.request("join", "POST",
      `/v1/events/${encodeURIComponent(this.eventId)}/join`, body);
    if (this.stopped) {
      return;
    }
    if (result.outcome.action === "retry") {
      this.scheduleRetry(result.outcome, () => this.joinOnce());
      return;
    }
    if (result.body && typeof result.body.queue_id === "string") {
      this.queueId = result.body.queue_id;
      this.savePlace(result.body);
    }
    this.failures = 0;
    this.apply(result.body, result.outcome, "polling");
    this.afterEntry(result.body);
  }

  async pollOnce() {
    const path = `/v1/queue/${encodeURIComponent(this.queueId)}`;
    const [entryResult, eventResult] = await Promise.all([
      this.request("status", "GET", path),
      this.request("event", "GET", `/v1/events/${encodeURIComponent(this.eventId)}`),
    ]);
    if (this.stopped) {
      return;
    }
    if (entryResult.outcome.action === "retry") {
      this.scheduleRetry(entryResult.outcome, () => this.pollOnce());
      return;
    }
    this.failures = 0;
    const entry = entryResult.body;
    if (entry && eventResult.httpStatus === 200 && eventResult.body) {
      entry.event = eventResult.body;
    }
    this.apply(entry, interpret("status", entryResult.httpStatus, entry), "polling");
    this.afterEntry(entry);
  }

  /** After a successful response: stream when possible, otherwise poll after poll_after_ms. */
  afterEntry(entry) {
    if (this.stopped || FINAL_STATES.includes(this.status.state)) {
      return;
    }
    if (this.useStream && this.EventSource && this.streamFailures < 3 && !this.source) {
      this.openStream();
      return;
    }
    const pollMs = Math.max(this.minPollMs, entry?.poll_after_ms ?? 2000);
    this.schedule(pollMs, () => this.pollOnce());
  }

  // NOTE: EventSource hides keep-alive comments from scripts, so a stream that goes silent
  // without closing (a proxy that drops it quietly) is noticed only when the connection fails.
  openStream() {
    const url = `${this.baseUrl}/v1/queue/${encodeURIComponent(this.queueId)}/events`;
    const source = new this.EventSource(url);
    this.source = source;
    let received = false;
    this.update({ connection: "connecting" });

    source.addEventListener("status", (message) => {
      received = true;
      this.streamFailures = 0;
      const entry = JSON.parse(message.data);
      this.apply(entry, interpret("stream", 200, entry), "live");
    });
    source.addEventListener("service_error", (message) => {
      const body = JSON.parse(message.data);
      const outcome = interpret("stream", 503, body);
      if (outcome.action === "retry") {
        this.update({ connection: "retrying", reason: outcome.reason, message: outcome.message });
      } else {
        this.closeStream();
        this.apply(body, outcome, "idle");
      }
    });
    source.addEventListener("end", () => {
      this.closeStream();
      if (!FINAL_STATES.includes(this.status.state)) {
        this.pollOnce();
      }
    });
    source.onerror = () => {
      if (this.source !== source) {
        return;
      }
      // A refused or non-200 stream closes for good. A dropped one reconnects by itself, but
      // one that fails before any message counts as a failure, and polling takes over.
      if (source.readyState === 2 || !received) {
        this.streamFailures += 1;
        this.closeStream();
        this.update({ connection: "retrying" });
        this.failures += 1;
        const delayMs = backoffDelayMs(this.failures - 1, null, this.random, this.backoff);
        this.schedule(delayMs, () => this.pollOnce());
      } else {
        received = false;
        this.update({ connection: "reconnecting" });
      }
    };
  }

  closeStream() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }

  schedule(delayMs, action) {
    clearTimeout(this.timer);
    if (!this.stopped) {
      this.timer = setTimeout(action, delayMs);
    }
  }

  scheduleRetry(outcome, action) {
    const delayMs = backoffDelayMs(this.failures, outcome.retryAfterS, this.random, this.backoff);
    this.failures += 1;
    this.update({ connection: "retrying", reason: outcome.reason, message: outcome.message,
      retryInMs: delayMs });
    this.schedule(delayMs, action);
  }

  /** Move to the state an outcome names; keep the last reported state on an event update. */
  apply(entry, outcome, connection) {
    if (outcome.action === "event") {
      return;
    }
    const previous = this.status.state;
    const changes = { state: outcome.state, connection, reason: outcome.reason,
      message: outcome.message, retryInMs: null };
    if (entry && typeof entry === "object" && !entry.error) {
      changes.entry = entry;
      if (entry.event) {
        changes.event = entry.event;
      }
    }
    this.update(changes);

    if (outcome.state === "admitted" && entry && entry.token) {
      this.savePlace(entry);
    }
    if (["expired", "left", "closed"].includes(outcome.state)) {
      this.forgetPlace();
    }
    if (FINAL_STATES.includes(outcome.state)) {
      this.stop();
      if (previous !== outcome.state) {
        if (outcome.state === "admitted") {
          this.emit("admitted", this.status);
        }
        this.emit("final", this.status);
      }
    }
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}
