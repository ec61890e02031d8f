// Package gatekeepverify verifies Gatekeep admission tokens with the Go standard library only.
//
// The rules and their order match the Python verifier in gatekeep/verify.py; the shared
// vectors in tests/vectors check that both reach the same outcome. The first failing check
// returns a *TokenInvalid with one of these reasons:
//
//	too_large        the token is over MaxTokenBytes (checked before any parsing)
//	malformed        not three canonical base64url segments, a header that is not a JSON
//	                 object with string alg and kid, or a crit/b64 header
//	alg_not_allowed  alg is not HS256 or EdDSA
//	unknown_kid      no key has the header's kid
//	alg_not_allowed  alg differs from the algorithm of the key that kid names
//	bad_signature    the signature does not match
//	malformed        a payload that is not a JSON object, or a missing or mistyped claim
//	expired          now >= exp + leeway
//	not_yet_valid    now + leeway < nbf
//	wrong_event      event_id or aud differs from the expected event
//	wrong_device     device_id or sub differs from the expected device (when one is given)
package gatekeepverify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

const (
	// MaxTokenBytes bounds the work done before the signature check.
	MaxTokenBytes = 4096
	// DefaultLeeway is the clock-skew allowance that NewVerifier sets.
	DefaultLeeway = 5 * time.Second
	// MinHS256SecretBytes is the SHA-256 output size (RFC 7518, section 3.2).
	MinHS256SecretBytes = 32
)

// Reason is the stable code of a failed verification.
type Reason string

const (
	Malformed     Reason = "malformed"
	BadSignature  Reason = "bad_signature"
	UnknownKid    Reason = "unknown_kid"
	AlgNotAllowed Reason = "alg_not_allowed"
	Expired       Reason = "expired"
	NotYetValid   Reason = "not_yet_valid"
	WrongEvent    Reason = "wrong_event"
	WrongDevice   Reason = "wrong_device"
	TooLarge      Reason = "too_large"
)

// TokenInvalid is returned when a token fails verification; Message is for people and may change.
type TokenInvalid struct {
	Reason  Reason
	Message string
}

func (e *TokenInvalid) Error() string { return string(e.Reason) + ": " + e.Message }

// KeyError is returned for an invalid key; Field names the bad JWK member.
type KeyError struct {
	Field   string
	Message string
}

func (e *KeyError) Error() string { return e.Field + ": " + e.Message }

// Key checks signatures. Alg belongs to the key, so a token header cannot change it.
type Key struct {
	Kid    string
	Alg    string // "HS256" or "EdDSA"
	secret []byte
	public ed25519.PublicKey
}

// Claims are the verified claims; JSON numbers are float64.
type Claims map[string]interface{}

var (
	kidPattern   = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)
	stringClaims = []string{"iss", "aud", "sub", "event_id", "device_id", "jti", "nonce"}
	timeClaims   = []string{"iat", "nbf", "exp"}
	// Strict rejects non-zero spare bits, so each byte string has one accepted encoding.
	base64URL = base64.RawURLEncoding.Strict()
)

// DeriveHS256Kid returns the kid that Gatekeep derives from an HS256 secret when none is configured.
func DeriveHS256Kid(secret []byte) string {
	sum := sha256.Sum256(secret)
	return "hs256-" + hex.EncodeToString(sum[:])[:16]
}

// HS256Key builds an HS256 key; an empty kid means the derived one.
func HS256Key(secret []byte, kid string) (Key, error) {
	if len(secret) < MinHS256SecretBytes {
		return Key{}, &KeyError{"secret", fmt.Sprintf("the HS256 secret is %d bytes; use at least %d random bytes", len(secret), MinHS256SecretBytes)}
	}
	if kid == "" {
		kid = DeriveHS256Kid(secret)
	}
	if !kidPattern.MatchString(kid) {
		return Key{}, &KeyError{"kid", fmt.Sprintf("invalid kid %q; use 1 to 64 characters from A-Z, a-z, 0-9 and . _ : -", kid)}
	}
	return Key{Kid: kid, Alg: "HS256", secret: append([]byte(nil), secret...)}, nil
}

// EdDSAKey builds an EdDSA key from a 32-byte Ed25519 public key.
func EdDSAKey(public ed25519.PublicKey, kid string) (Key, error) {
	if len(public) != ed25519.PublicKeySize {
		return Key{}, &KeyError{"x", fmt.Sprintf("an Ed25519 public key is 32 bytes, got %d", len(public))}
	}
	if !kidPattern.MatchString(kid) {
		return Key{}, &KeyError{"kid", fmt.Sprintf("invalid kid %q; use 1 to 64 characters from A-Z, a-z, 0-9 and . _ : -", kid)}
	}
	return Key{Kid: kid, Alg: "EdDSA", public: append(ed25519.PublicKey(nil), public...)}, nil
}

// KeysFromJWKS parses a JWKS document ({"keys": [...]}) of OKP/Ed25519 and oct/HS256 keys.
func KeysFromJWKS(document []byte) (map[string]Key, error) {
	var jwks struct {
		Keys []map[string]interface{} `json:"keys"`
	}
	if err := json.Unmarshal(document, &jwks); err != nil || jwks.Keys == nil {
		return nil, &KeyError{"keys", `expected a JWKS document: {"keys": [ ... ]}`}
	}
	keys := make(map[string]Key, len(jwks.Keys))
	for index, jwk := range jwks.Keys {
		key, err := KeyFromJWK(jwk, fmt.Sprintf("keys[%d]", index))
		if err != nil {
			return nil, err
		}
		if _, seen := keys[key.Kid]; seen {
			return nil, &KeyError{"keys", fmt.Sprintf("kid %q appears twice; give each key its own kid", key.Kid)}
		}
		keys[key.Kid] = key
	}
	return keys, nil
}

// KeyFromJWK builds a key from one parsed JWK; field prefixes the member names in errors.
func KeyFromJWK(jwk map[string]interface{}, field string) (Key, error) {
	kid, _ := jwk["kid"].(string)
	if !kidPattern.MatchString(kid) {
		return Key{}, &KeyError{field + ".kid", fmt.Sprintf("invalid kid %v", jwk["kid"])}
	}
	if use, present := jwk["use"]; present && use != "sig" {
		return Key{}, &KeyError{field + ".use", fmt.Sprintf("expected 'sig', got %v", use)}
	}

	switch jwk["kty"] {
	case "OKP":
		if jwk["crv"] != "Ed25519" {
			return Key{}, &KeyError{field + ".crv", fmt.Sprintf("expected 'Ed25519', got %v", jwk["crv"])}
		}
		if alg, present := jwk["alg"]; present && alg != "EdDSA" {
			return Key{}, &KeyError{field + ".alg", fmt.Sprintf("an Ed25519 key needs alg 'EdDSA', got %v", alg)}
		}
		if _, present := jwk["d"]; present {
			return Key{}, &KeyError{field + ".d", "the JWK contains a private key; give origins only the public part"}
		}
		raw, err := jwkBytes(jwk, "x", field)
		if err != nil {
			return Key{}, err
		}
		key, err := EdDSAKey(raw, kid)
		if err != nil {
			return Key{}, &KeyError{field + "." + err.(*KeyError).Field, err.(*KeyError).Message}
		}
		return key, nil
	case "oct":
		if jwk["alg"] != "HS256" {
			return Key{}, &KeyError{field + ".alg", fmt.Sprintf("an oct key needs alg 'HS256', got %v", jwk["alg"])}
		}
		secret, err := jwkBytes(jwk, "k", field)
		if err != nil {
			return Key{}, err
		}
		key, err := HS256Key(secret, kid)
		if err != nil {
			return Key{}, &KeyError{field + ".k", err.(*KeyError).Message}
		}
		return key, nil
	}
	return Key{}, &KeyError{field + ".kty", fmt.Sprintf("unsupported key type %v; use 'OKP' or 'oct'", jwk["kty"])}
}

func jwkBytes(jwk map[string]interface{}, member, field string) ([]byte, error) {
	text, _ := jwk[member].(string)
	value, err := base64URL.DecodeString(text)
	if err != nil || text == "" {
		return nil, &KeyError{field + "." + member, "missing or not unpadded base64url"}
	}
	return value, nil
}

// Options are the expectations of one verification.
type Options struct {
	EventID  string
	DeviceID string        // empty skips the device check
	Leeway   time.Duration // clock-skew allowance; zero means none
	Now      time.Time     // zero means time.Now()
}

// VerifyToken verifies an admission token and returns its claims, or a *TokenInvalid.
func VerifyToken(token string, keys map[string]Key, opts Options) (Claims, error) {
	header, payload, signingInput, signature, err := parseToken(token)
	if err != nil {
		return nil, err
	}
	key, err := selectKey(header, keys)
	if err != nil {
		return nil, err
	}
	if !signatureMatches(key, signingInput, signature) {
		return nil, invalid(BadSignature, "the signature does not match")
	}

	claims, err := parseClaims(payload)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	if err := checkTime(claims, float64(now.UnixNano())/1e9, opts.Leeway.Seconds()); err != nil {
		return nil, err
	}
	if claims["event_id"] != opts.EventID || claims["aud"] != opts.EventID {
		return nil, invalid(WrongEvent, fmt.Sprintf("the token is for another event, not %q", opts.EventID))
	}
	if opts.DeviceID != "" && (claims["device_id"] != opts.DeviceID || claims["sub"] != opts.DeviceID) {
		return nil, invalid(WrongDevice, "the token was issued to another device")
	}
	return claims, nil
}

// Verifier verifies tokens for one event with a fixed set of keys, as an origin uses it.
type Verifier struct {
	Keys    map[string]Key
	EventID string
	Leeway  time.Duration
	Now     func() time.Time
}

// NewVerifier returns a Verifier with DefaultLeeway and the system clock.
func NewVerifier(keys map[string]Key, eventID string) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, &KeyError{"keys", "no verification keys given; pass a JWKS or at least one key"}
	}
	return &Verifier{Keys: keys, EventID: eventID, Leeway: DefaultLeeway, Now: time.Now}, nil
}

// Verify verifies token for the verifier's event; an empty deviceID skips the device check.
func (v *Verifier) Verify(token, deviceID string) (Claims, error) {
	return VerifyToken(token, v.Keys, Options{EventID: v.EventID, DeviceID: deviceID, Leeway: v.Leeway, Now: v.Now()})
}

func invalid(reason Reason, message string) error {
	return &TokenInvalid{Reason: reason, Message: message}
}

func parseToken(token string) (map[string]interface{}, []byte, []byte, []byte, error) {
	if len(token) > MaxTokenBytes {
		return nil, nil, nil, nil, invalid(TooLarge, fmt.Sprintf("the token is %d bytes; the maximum is %d", len(token), MaxTokenBytes))
	}
	for i := 0; i < len(token); i++ {
		if token[i] >= 0x80 {
			return nil, nil, nil, nil, invalid(Malformed, "the token contains non-ASCII characters")
		}
	}

	segments := strings.Split(token, ".")
	if len(segments) != 3 {
		return nil, nil, nil, nil, invalid(Malformed, fmt.Sprintf("expected 3 dot-separated segments, got %d", len(segments)))
	}
	var decoded [3][]byte
	for index, name := range []string{"header", "payload", "signature"} {
		value, err := base64URL.DecodeString(segments[index])
		// The decoder skips \r and \n, so re-encoding confirms the segment had none.
		if err != nil || base64URL.EncodeToString(value) != segments[index] {
			return nil, nil, nil, nil, invalid(Malformed, fmt.Sprintf("the %s segment is not canonical unpadded base64url", name))
		}
		decoded[index] = value
	}

	header, err := parseJSONObject(decoded[0], "header")
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if _, ok := header["alg"].(string); !ok {
		return nil, nil, nil, nil, invalid(Malformed, "the header has no string `alg`")
	}
	if _, ok := header["kid"].(string); !ok {
		return nil, nil, nil, nil, invalid(Malformed, "the header has no string `kid`")
	}
	_, hasCrit := header["crit"]
	_, hasB64 := header["b64"]
	if hasCrit || hasB64 {
		return nil, nil, nil, nil, invalid(Malformed, "the header uses `crit` or `b64`, which are not supported")
	}
	signingInput := []byte(segments[0] + "." + segments[1])
	return header, decoded[1], signingInput, decoded[2], nil
}

func parseJSONObject(data []byte, name string) (map[string]interface{}, error) {
	// encoding/json replaces invalid UTF-8 silently, and must not decode into a struct here:
	// struct fields match keys case-insensitively, which other verifiers do not.
	var value map[string]interface{}
	if !utf8.Valid(data) || bytes.HasPrefix(data, []byte("\xef\xbb\xbf")) {
		return nil, invalid(Malformed, fmt.Sprintf("the %s is not valid UTF-8 JSON", name))
	}
	if err := json.Unmarshal(data, &value); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return nil, invalid(Malformed, fmt.Sprintf("the %s is not a JSON object", name))
		}
		return nil, invalid(Malformed, fmt.Sprintf("the %s is not valid UTF-8 JSON", name))
	}
	if value == nil {
		return nil, invalid(Malformed, fmt.Sprintf("the %s is not a JSON object", name))
	}
	return value, nil
}

func selectKey(header map[string]interface{}, keys map[string]Key) (Key, error) {
	alg := header["alg"].(string)
	if alg != "HS256" && alg != "EdDSA" {
		return Key{}, invalid(AlgNotAllowed, fmt.Sprintf("alg %q is not allowed; use HS256 or EdDSA", truncate(alg, 20)))
	}
	kid := header["kid"].(string)
	key, found := keys[kid]
	if !found {
		return Key{}, invalid(UnknownKid, fmt.Sprintf("no verification key has kid %q", truncate(kid, 64)))
	}
	if key.Alg != alg {
		return Key{}, invalid(AlgNotAllowed, fmt.Sprintf("the header has alg %s, but key %s is %s", alg, key.Kid, key.Alg))
	}
	return key, nil
}

func signatureMatches(key Key, signingInput, signature []byte) bool {
	if key.Alg == "HS256" {
		mac := hmac.New(sha256.New, key.secret)
		mac.Write(signingInput)
		return hmac.Equal(signature, mac.Sum(nil))
	}
	return ed25519.Verify(key.public, signingInput, signature)
}

func parseClaims(payload []byte) (Claims, error) {
	claims, err := parseJSONObject(payload, "payload")
	if err != nil {
		return nil, err
	}
	for _, name := range stringClaims {
		if _, ok := claims[name].(string); !ok {
			return nil, invalid(Malformed, fmt.Sprintf("claim `%s` is missing or not a string", name))
		}
	}
	for _, name := range timeClaims {
		// encoding/json rejects numbers beyond float64, so every number here is finite.
		value, ok := claims[name].(float64)
		if !ok || math.IsInf(value, 0) || math.IsNaN(value) {
			return nil, invalid(Malformed, fmt.Sprintf("claim `%s` is missing or not a finite number", name))
		}
	}
	userID, present := claims["user_id"]
	if _, isString := userID.(string); !present || (userID != nil && !isString) {
		return nil, invalid(Malformed, "claim `user_id` is missing or not a string or null")
	}
	return claims, nil
}

func checkTime(claims Claims, nowS, leewayS float64) error {
	exp := claims["exp"].(float64)
	nbf := claims["nbf"].(float64)
	if nowS >= exp+leewayS {
		return invalid(Expired, fmt.Sprintf("the token expired at %.0f (now %.0f, leeway %g s)", exp, math.Floor(nowS), leewayS))
	}
	if nowS+leewayS < nbf {
		return invalid(NotYetValid, fmt.Sprintf("the token is valid from %.0f (now %.0f, leeway %g s)", nbf, math.Floor(nowS), leewayS))
	}
	return nil
}

func truncate(text string, length int) string {
	if len(text) > length {
		return text[:length]
	}
	return text
}
