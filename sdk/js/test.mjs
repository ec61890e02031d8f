// Runs the shared client-protocol vectors and a few client flows through the browser SDK with
// `node --test` in this directory. The SDK file is the one the service serves, unchanged.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  GatekeepClient,
  MemoryStorage,
  backoffDelayMs,
  interpret,
  retryAfterSeconds,
} from "../../src/gatekeep/static/gatekeep.js";

const vectorsPath = new URL("../../tests/vectors/client_protocol.json", import.meta.url);
const vectors = JSON.parse(readFileSync(vectorsPath, "utf8"));

for (const vector of vectors.responses) {
  test(`vector: ${vector.name}`, () => {
    const retryAfterS = retryAfterSeconds(vector.retry_after_header ?? null);
    const outcome = interpret(vector.call, vector.http_status, vector.body, retryAfterS);
    assert.equal(outcome.action, vector.expect.action);
    assert.equal(outcome.reason, vector.expect.reason);
    if (vector.expect.action === "state") {
      assert.equal(outcome.state, vector.expect.state);
    } else {
      assert.equal(outcome.retryAfterS ?? null, vector.expect.retry_after_s);
    }
  });
}

for (const vector of vectors.backoff.cases) {
  test(`backoff: attempt ${vector.attempt}, retry-after ${vector.retry_after_s}, random ${vector.random}`, () => {
    const options = { baseMs: vectors.backoff.base_ms, capMs: vectors.backoff.cap_ms };
    const delayMs = backoffDelayMs(vector.attempt, vector.retry_after_s, () => vector.random, options);
    assert.equal(delayMs, vector.expect_delay_ms);
  });
}

/** A fetch that returns [status, body, headers] from a script and records the calls. */
function scriptedFetch(script) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    calls.push({ url, method: init.method ?? "GET" });
    const next = typeof script === "function" ? script(url, init) : script.shift();
    if (next === "network") {
      throw new TypeError("fetch failed");
    }
    const [status, body, headers = {}] = next;
    return new Response(body === null ? "" : JSON.stringify(body), { status, headers });
  };
  return { fetch, calls };
}

function waitForFinal(client) {
  return new Promise((resolve) => client.on("final", resolve));
}

const waitingEntry = (position) => ({
  queue_id: "AAAAAAAAAAAAAAAAAAAAAA.launch", event_id: "launch", status: "waiting", position,
  eta_s: position * 2, poll_after_ms: 10, token: null,
});
const openEvent = { event_id: "launch", state: "open" };

test("client joins, polls and is admitted", async () => {
  const storage = new MemoryStorage();
  const { fetch } = scriptedFetch((url, init) => {
    if (url.endsWith("/join")) return [201, waitingEntry(2)];
    if (url.includes("/v1/events/")) return [200, openEvent];
    return [200, { ...waitingEntry(1), status: "admitted", position: null, token: "t.o.k",
      session_expires_at_ms: Date.now() + 60000 }];
  });
  const client = new GatekeepClient({ eventId: "launch", fetch, storage, EventSource: null, minPollMs: 1 });
  const states = [];
  client.on("status", (status) => states.push(status.state));
  const final = waitForFinal(client);
  await client.start();
  const status = await final;

  assert.equal(status.state, "admitted");
  assert.equal(status.entry.token, "t.o.k");
  assert.deepEqual([...new Set(states)], ["joining", "waiting", "admitted"]);
  assert.equal(JSON.parse(storage.getItem("gatekeep:place:launch")).token, "t.o.k");
});

test("client resumes a saved place without joining", async () => {
  const storage = new MemoryStorage();
  storage.setItem("gatekeep:place:launch", JSON.stringify({ queue_id: "AAAAAAAAAAAAAAAAAAAAAA.launch" }));
  const { fetch, calls } = scriptedFetch((url) => {
    if (url.includes("/v1/events/")) return [200, openEvent];
    return [410, { error: { code: "queue_entry_expired", message: "expired" } }];
  });
  const client = new GatekeepClient({ eventId: "launch", fetch, storage, EventSource: null });
  const final = waitForFinal(client);
  await client.start();
  const status = await final;

  assert.equal(status.state, "expired");
  assert.equal(calls.filter((call) => call.url.endsWith("/join")).length, 0);
  assert.equal(storage.getItem("gatekeep:place:launch"), null);
});

test("client retries 503 honouring Retry-After", async () => {
  const storage = new MemoryStorage();
  let joins = 0;
  const { fetch } = scriptedFetch((url) => {
    if (url.endsWith("/join")) {
      joins += 1;
      if (joins === 1) return [503, { error: { code: "store_unavailable", message: "down" } }, { "Retry-After": "0" }];
      if (joins === 2) return "network";
      return [409, { error: { code: "event_disabled", message: "closed" } }];
    }
    return [200, openEvent];
  });
  const client = new GatekeepClient({
    eventId: "launch", fetch, storage, EventSource: null, random: () => 0.01,
    backoff: { baseMs: 10, capMs: 50 },
  });
  const connections = [];
  client.on("status", (status) => connections.push(status.connection));
  const final = waitForFinal(client);
  await client.start();
  const status = await final;

  assert.equal(joins, 3);
  assert.equal(status.state, "closed");
  assert.equal(status.reason, "event_disabled");
  assert.ok(connections.includes("retrying"));
});

test("client never reports a state the service did not send", async () => {
  const { fetch } = scriptedFetch(() => "network");
  const client = new GatekeepClient({
    eventId: "launch", fetch, storage: new MemoryStorage(), EventSource: null,
    random: () => 0, backoff: { baseMs: 1, capMs: 1 },
  });
  const states = new Set();
  client.on("status", (status) => states.add(status.state));
  await client.start();
  await new Promise((resolve) => setTimeout(resolve, 50));
  client.stop();

  assert.deepEqual([...states], ["joining"]);
});
