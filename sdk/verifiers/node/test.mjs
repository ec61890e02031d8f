// Runs every shared vector through the Node verifier: `node --test` in this directory.
// GATEKEEP_VECTORS may point at another vectors file.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  KeyConfigError,
  TokenInvalid,
  Verifier,
  deriveHs256Kid,
  hs256Key,
  keyFromJwk,
  keysFromJwks,
  verifyToken,
} from './verify.mjs';

const vectorsPath = process.env.GATEKEEP_VECTORS ?? new URL('../../../tests/vectors/token_vectors.json', import.meta.url);
const vectors = JSON.parse(readFileSync(vectorsPath, 'utf8'));
const keys = keysFromJwks(vectors.jwks);

function outcome(testCase) {
  try {
    const claims = verifyToken(testCase.token, keys, {
      eventId: testCase.event_id,
      deviceId: testCase.device_id,
      leewayS: testCase.leeway_s,
      nowS: testCase.now_s,
    });
    return { valid: true, claims };
  } catch (error) {
    if (!(error instanceof TokenInvalid)) {
      throw error;
    }
    return { valid: false, reason: error.reason };
  }
}

for (const testCase of vectors.cases) {
  test(`vector ${testCase.name}`, () => {
    assert.deepEqual(outcome(testCase), testCase.expected);
  });
}

test('vectors exist', () => {
  assert.ok(vectors.cases.length >= 40, `only ${vectors.cases.length} cases`);
});

test('derived kid matches Python', () => {
  assert.equal(deriveHs256Kid(vectors.derived_kid.secret), vectors.derived_kid.kid);
  assert.equal(hs256Key(vectors.derived_kid.secret).kid, vectors.derived_kid.kid);
});

test('Verifier binds event and leeway', () => {
  const valid = vectors.cases.find((testCase) => testCase.name === 'valid_hs256');
  const verifier = new Verifier(vectors.jwks, { eventId: valid.event_id, leewayS: 0 });

  assert.equal(verifier.verify(valid.token, valid.device_id, { nowS: valid.now_s }).jti, valid.expected.claims.jti);
  assert.throws(
    () => verifier.verify(valid.token, null, { nowS: valid.expected.claims.exp }),
    (error) => error instanceof TokenInvalid && error.reason === 'expired',
  );
});

test('Verifier rejects an empty key set', () => {
  assert.throws(() => new Verifier({ keys: [] }, { eventId: 'e' }), KeyConfigError);
});

test('system clock rejects the old vectors', () => {
  const valid = vectors.cases.find((testCase) => testCase.name === 'valid_hs256');
  assert.throws(
    () => verifyToken(valid.token, keys, { eventId: valid.event_id }),
    (error) => error.reason === 'expired',
  );
});

test('JWK with a private part is rejected', () => {
  assert.throws(
    () => keyFromJwk({ kty: 'OKP', crv: 'Ed25519', x: 'A'.repeat(43), d: 'B'.repeat(43), kid: 'k' }),
    (error) => error instanceof KeyConfigError && error.field === 'jwk.d',
  );
});

test('short HS256 secret is rejected', () => {
  assert.throws(() => hs256Key('short'), (error) => error instanceof KeyConfigError && error.field === 'secret');
});

test('duplicate kids are rejected', () => {
  const key = hs256Key('x'.repeat(32), 'same');
  assert.throws(() => verifyToken('a.b.c', [key, key], { eventId: 'e' }), KeyConfigError);
});
