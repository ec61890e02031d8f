// Verifies Gatekeep admission tokens with Node's own `crypto` module and no dependencies.
//
// The rules and their order match the Python verifier in `gatekeep/verify.py`; the shared
// vectors in tests/vectors check that both reach the same outcome. The first failing check
// throws TokenInvalid with one of these reasons:
//
//   too_large        the token is over MAX_TOKEN_BYTES (checked before any parsing)
//   malformed        not three canonical base64url segments, a header that is not a JSON
//                    object with string `alg` and `kid`, or a `crit`/`b64` header
//   alg_not_allowed  `alg` is not HS256 or EdDSA
//   unknown_kid      no key has the header's `kid`
//   alg_not_allowed  `alg` differs from the algorithm of the key that `kid` names
//   bad_signature    the signature does not match
//   malformed        a payload that is not a JSON object, or a missing or mistyped claim
//   expired          nowS >= exp + leewayS
//   not_yet_valid    nowS + leewayS < nbf
//   wrong_event      `event_id` or `aud` differs from the expected event
//   wrong_device     `device_id` or `sub` differs from the expected device (when one is given)

import {
  createHash,
  createHmac,
  createPublicKey,
  timingSafeEqual,
  verify as verifySignature,
} from 'node:crypto';

export const MAX_TOKEN_BYTES = 4096;
export const DEFAULT_LEEWAY_S = 5;
export const MIN_HS256_SECRET_BYTES = 32;

const ALLOWED_ALGORITHMS = new Set(['HS256', 'EdDSA']);
const KID_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;
const SEGMENT_PATTERN = /^[A-Za-z0-9_-]*$/;
const ASCII_PATTERN = /^[\x00-\x7f]*$/;
const STRING_CLAIMS = ['iss', 'aud', 'sub', 'event_id', 'device_id', 'jti', 'nonce'];
const TIME_CLAIMS = ['iat', 'nbf', 'exp'];

// `ignoreBOM` keeps a byte order mark in the text, so JSON.parse rejects it as Python does.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Thrown when a token fails verification; `reason` is a stable code, the message may change. */
export class TokenInvalid extends Error {
  constructor(reason, message) {
    super(`${reason}: ${message}`);
    this.name = 'TokenInvalid';
    this.reason = reason;
  }
}

/** Thrown for an invalid key; `field` names the bad member. */
export class KeyConfigError extends Error {
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.name = 'KeyConfigError';
    this.field = field;
  }
}

/** Decodes unpadded base64url, or returns null unless `segment` is its one canonical encoding. */
export function decodeBase64UrlStrict(segment) {
  if (segment.length % 4 === 1 || !SEGMENT_PATTERN.test(segment)) {
    return null;
  }
  const bytes = Buffer.from(segment, 'base64url');
  return bytes.toString('base64url') === segment ? bytes : null;
}

/** Returns the kid that Gatekeep derives from an HS256 secret when none is configured. */
export function deriveHs256Kid(secret) {
  return 'hs256-' + createHash('sha256').update(toBuffer(secret)).digest('hex').slice(0, 16);
}

/** Builds an HS256 key; a string secret is used as its UTF-8 bytes. */
export function hs256Key(secret, kid = undefined) {
  const key = toBuffer(secret);
  checkHs256Secret('secret', key);
  return { kid: checkKid('kid', kid ?? deriveHs256Kid(key)), alg: 'HS256', key };
}

/** Builds a key from one JWK: an `OKP`/`Ed25519` public key or an `oct` HS256 secret. */
export function keyFromJwk(jwk, field = 'jwk') {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) {
    throw new KeyConfigError(field, 'expected a JSON object (a JWK)');
  }
  const kid = checkKid(`${field}.kid`, jwk.kid);
  if ((jwk.use ?? 'sig') !== 'sig') {
    throw new KeyConfigError(`${field}.use`, `expected 'sig', got ${JSON.stringify(jwk.use)}`);
  }

  if (jwk.kty === 'OKP') {
    if (jwk.crv !== 'Ed25519') {
      throw new KeyConfigError(`${field}.crv`, `expected 'Ed25519', got ${JSON.stringify(jwk.crv)}`);
    }
    if ((jwk.alg ?? 'EdDSA') !== 'EdDSA') {
      throw new KeyConfigError(`${field}.alg`, `an Ed25519 key needs alg 'EdDSA', got ${JSON.stringify(jwk.alg)}`);
    }
    if ('d' in jwk) {
      throw new KeyConfigError(`${field}.d`, 'the JWK contains a private key; give origins only the public part');
    }
    const raw = jwkBytes(jwk, 'x', field);
    if (raw.length !== 32) {
      throw new KeyConfigError(`${field}.x`, `an Ed25519 public key is 32 bytes, got ${raw.length}`);
    }
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' });
    return { kid, alg: 'EdDSA', key };
  }

  if (jwk.kty === 'oct') {
    if (jwk.alg !== 'HS256') {
      throw new KeyConfigError(`${field}.alg`, `an oct key needs alg 'HS256', got ${JSON.stringify(jwk.alg)}`);
    }
    const key = jwkBytes(jwk, 'k', field);
    checkHs256Secret(`${field}.k`, key);
    return { kid, alg: 'HS256', key };
  }
  throw new KeyConfigError(`${field}.kty`, `unsupported key type ${JSON.stringify(jwk.kty)}; use 'OKP' or 'oct'`);
}

/** Returns a Map of kid to key from a JWKS document (`{"keys": [...]}`). */
export function keysFromJwks(jwks) {
  if (!Array.isArray(jwks?.keys)) {
    throw new KeyConfigError('keys', 'expected a JWKS document: {"keys": [ ... ]}');
  }
  return indexByKid(jwks.keys.map((jwk, index) => keyFromJwk(jwk, `keys[${index}]`)));
}

/**
 * Verifies an admission token for `eventId` and returns its claims.
 *
 * `keys` is a Map of kid to key, an array of keys, or a JWKS document. `deviceId` null skips
 * the device check. `nowS` defaults to the system clock in Unix seconds.
 */
export function verifyToken(token, keys, { eventId, deviceId = null, leewayS = DEFAULT_LEEWAY_S, nowS } = {}) {
  if (typeof eventId !== 'string') {
    throw new TypeError('eventId is required');
  }
  const keyMap = collectKeys(keys);
  const { header, payload, signingInput, signature } = parseToken(token);
  const key = selectKey(header, keyMap);
  if (!signatureMatches(key, signingInput, signature)) {
    throw new TokenInvalid('bad_signature', 'the signature does not match');
  }

  const claims = parseClaims(payload);
  checkTime(claims, nowS ?? Date.now() / 1000, leewayS);
  if (claims.event_id !== eventId || claims.aud !== eventId) {
    throw new TokenInvalid('wrong_event', `the token is for another event, not ${JSON.stringify(eventId)}`);
  }
  if (deviceId !== null && deviceId !== undefined && (claims.device_id !== deviceId || claims.sub !== deviceId)) {
    throw new TokenInvalid('wrong_device', 'the token was issued to another device');
  }
  return claims;
}

/** Verification for one event with keys loaded once, as an origin uses it. */
export class Verifier {
  constructor(keys, { eventId, leewayS = DEFAULT_LEEWAY_S }) {
    this.keys = collectKeys(keys);
    if (this.keys.size === 0) {
      throw new KeyConfigError('keys', 'no verification keys given; pass a JWKS or at least one key');
    }
    if (!(leewayS >= 0)) {
      throw new KeyConfigError('leewayS', `must be 0 or more seconds, got ${leewayS}`);
    }
    this.eventId = eventId;
    this.leewayS = leewayS;
  }

  verify(token, deviceId = null, { nowS } = {}) {
    return verifyToken(token, this.keys, { eventId: this.eventId, deviceId, leewayS: this.leewayS, nowS });
  }
}

function parseToken(token) {
  if (typeof token !== 'string') {
    throw new TokenInvalid('malformed', `expected the token as a string, got ${typeof token}`);
  }
  const size = Buffer.byteLength(token, 'utf8');
  if (size > MAX_TOKEN_BYTES) {
    throw new TokenInvalid('too_large', `the token is ${size} bytes; the maximum is ${MAX_TOKEN_BYTES}`);
  }
  if (!ASCII_PATTERN.test(token)) {
    throw new TokenInvalid('malformed', 'the token contains non-ASCII characters');
  }

  const segments = token.split('.');
  if (segments.length !== 3) {
    throw new TokenInvalid('malformed', `expected 3 dot-separated segments, got ${segments.length}`);
  }
  const decoded = segments.map(decodeBase64UrlStrict);
  ['header', 'payload', 'signature'].forEach((name, index) => {
    if (decoded[index] === null) {
      throw new TokenInvalid('malformed', `the ${name} segment is not canonical unpadded base64url`);
    }
  });

  const header = parseJsonObject(decoded[0], 'header');
  if (typeof header.alg !== 'string') {
    throw new TokenInvalid('malformed', 'the header has no string `alg`');
  }
  if (typeof header.kid !== 'string') {
    throw new TokenInvalid('malformed', 'the header has no string `kid`');
  }
  if (Object.hasOwn(header, 'crit') || Object.hasOwn(header, 'b64')) {
    throw new TokenInvalid('malformed', 'the header uses `crit` or `b64`, which are not supported');
  }
  return {
    header,
    payload: decoded[1],
    signingInput: Buffer.from(`${segments[0]}.${segments[1]}`, 'ascii'),
    signature: decoded[2],
  };
}

function parseJsonObject(bytes, name) {
  let value;
  try {
    value = JSON.parse(UTF8.decode(bytes));
  } catch {
    throw new TokenInvalid('malformed', `the ${name} is not valid UTF-8 JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TokenInvalid('malformed', `the ${name} is not a JSON object`);
  }
  return value;
}

function selectKey(header, keys) {
  if (!ALLOWED_ALGORITHMS.has(header.alg)) {
    throw new TokenInvalid('alg_not_allowed', `alg ${JSON.stringify(header.alg.slice(0, 20))} is not allowed; use HS256 or EdDSA`);
  }
  const key = keys.get(header.kid);
  if (key === undefined) {
    throw new TokenInvalid('unknown_kid', `no verification key has kid ${JSON.stringify(header.kid.slice(0, 64))}`);
  }
  if (key.alg !== header.alg) {
    throw new TokenInvalid('alg_not_allowed', `the header has alg ${header.alg}, but key ${key.kid} is ${key.alg}`);
  }
  return key;
}

function signatureMatches(key, signingInput, signature) {
  if (key.alg === 'HS256') {
    const expected = createHmac('sha256', key.key).update(signingInput).digest();
    return signature.length === expected.length && timingSafeEqual(signature, expected);
  }
  try {
    return verifySignature(null, signingInput, key.key, signature);
  } catch {
    return false; // Node throws for some signatures of the wrong length
  }
}

function parseClaims(payload) {
  const claims = parseJsonObject(payload, 'payload');
  for (const name of STRING_CLAIMS) {
    if (typeof claims[name] !== 'string' || !Object.hasOwn(claims, name)) {
      throw new TokenInvalid('malformed', `claim \`${name}\` is missing or not a string`);
    }
  }
  for (const name of TIME_CLAIMS) {
    if (typeof claims[name] !== 'number' || !Number.isFinite(claims[name])) {
      throw new TokenInvalid('malformed', `claim \`${name}\` is missing or not a finite number`);
    }
  }
  if (!Object.hasOwn(claims, 'user_id') || (claims.user_id !== null && typeof claims.user_id !== 'string')) {
    throw new TokenInvalid('malformed', 'claim `user_id` is missing or not a string or null');
  }
  return claims;
}

function checkTime(claims, nowS, leewayS) {
  if (nowS >= claims.exp + leewayS) {
    throw new TokenInvalid('expired', `the token expired at ${claims.exp} (now ${Math.floor(nowS)}, leeway ${leewayS} s)`);
  }
  if (nowS + leewayS < claims.nbf) {
    throw new TokenInvalid('not_yet_valid', `the token is valid from ${claims.nbf} (now ${Math.floor(nowS)}, leeway ${leewayS} s)`);
  }
}

function collectKeys(source) {
  if (source instanceof Map) {
    return source;
  }
  if (Array.isArray(source)) {
    return indexByKid(source);
  }
  return keysFromJwks(source);
}

function indexByKid(keys) {
  const indexed = new Map();
  for (const key of keys) {
    if (indexed.has(key.kid)) {
      throw new KeyConfigError('keys', `kid ${JSON.stringify(key.kid)} appears twice; give each key its own kid`);
    }
    indexed.set(key.kid, key);
  }
  return indexed;
}

function jwkBytes(jwk, member, field) {
  const value = typeof jwk[member] === 'string' ? decodeBase64UrlStrict(jwk[member]) : null;
  if (value === null) {
    throw new KeyConfigError(`${field}.${member}`, 'missing or not unpadded base64url');
  }
  return value;
}

function checkKid(field, kid) {
  if (typeof kid !== 'string' || !KID_PATTERN.test(kid)) {
    throw new KeyConfigError(field, `invalid kid ${JSON.stringify(kid)}; use 1 to 64 characters from A-Z, a-z, 0-9 and . _ : -`);
  }
  return kid;
}

function checkHs256Secret(field, secret) {
  if (secret.length < MIN_HS256_SECRET_BYTES) {
    throw new KeyConfigError(field, `the HS256 secret is ${secret.length} bytes; use at least ${MIN_HS256_SECRET_BYTES} random bytes`);
  }
}

function toBuffer(secret) {
  return typeof secret === 'string' ? Buffer.from(secret, 'utf8') : Buffer.from(secret);
}
