package gatekeepverify

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"
)

// vectorFile is the shared vectors file; GATEKEEP_VECTORS may point at another one.
type vectorFile struct {
	JWKS       json.RawMessage `json:"jwks"`
	DerivedKid struct {
		Secret string `json:"secret"`
		Kid    string `json:"kid"`
	} `json:"derived_kid"`
	Cases []vectorCase `json:"cases"`
}

type vectorCase struct {
	Name     string  `json:"name"`
	Token    string  `json:"token"`
	EventID  string  `json:"event_id"`
	DeviceID *string `json:"device_id"`
	LeewayS  float64 `json:"leeway_s"`
	NowS     int64   `json:"now_s"`
	Expected struct {
		Valid  bool                   `json:"valid"`
		Reason string                 `json:"reason"`
		Claims map[string]interface{} `json:"claims"`
	} `json:"expected"`
}

func loadVectors(t *testing.T) (vectorFile, map[string]Key) {
	t.Helper()
	path := os.Getenv("GATEKEEP_VECTORS")
	if path == "" {
		path = "../../../tests/vectors/token_vectors.json"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading vectors: %v", err)
	}
	var vectors vectorFile
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatalf("parsing vectors: %v", err)
	}
	keys, err := KeysFromJWKS(vectors.JWKS)
	if err != nil {
		t.Fatalf("loading the vectors' keys: %v", err)
	}
	return vectors, keys
}

func TestVectors(t *testing.T) {
	vectors, keys := loadVectors(t)
	if len(vectors.Cases) < 40 {
		t.Fatalf("only %d cases", len(vectors.Cases))
	}
	for _, testCase := range vectors.Cases {
		testCase := testCase
		t.Run(testCase.Name, func(t *testing.T) {
			options := Options{
				EventID: testCase.EventID,
				Leeway:  time.Duration(testCase.LeewayS * float64(time.Second)),
				Now:     time.Unix(testCase.NowS, 0),
			}
			if testCase.DeviceID != nil {
				options.DeviceID = *testCase.DeviceID
			}
			claims, err := VerifyToken(testCase.Token, keys, options)

			if testCase.Expected.Valid {
				if err != nil {
					t.Fatalf("expected valid, got %v", err)
				}
				if !reflect.DeepEqual(map[string]interface{}(claims), testCase.Expected.Claims) {
					t.Fatalf("claims %v, expected %v", claims, testCase.Expected.Claims)
				}
				return
			}
			var tokenInvalid *TokenInvalid
			if !errors.As(err, &tokenInvalid) {
				t.Fatalf("expected reason %s, got %v", testCase.Expected.Reason, err)
			}
			if string(tokenInvalid.Reason) != testCase.Expected.Reason {
				t.Fatalf("reason %s (%s), expected %s", tokenInvalid.Reason, tokenInvalid.Message, testCase.Expected.Reason)
			}
		})
	}
}

func TestDerivedKidMatchesPython(t *testing.T) {
	vectors, _ := loadVectors(t)
	if got := DeriveHS256Kid([]byte(vectors.DerivedKid.Secret)); got != vectors.DerivedKid.Kid {
		t.Fatalf("derived kid %s, expected %s", got, vectors.DerivedKid.Kid)
	}
}

func TestVerifierBindsEventAndClock(t *testing.T) {
	vectors, keys := loadVectors(t)
	var valid vectorCase
	for _, testCase := range vectors.Cases {
		if testCase.Name == "valid_hs256" {
			valid = testCase
		}
	}
	verifier, err := NewVerifier(keys, valid.EventID)
	if err != nil {
		t.Fatal(err)
	}

	if _, err := verifier.Verify(valid.Token, *valid.DeviceID); err == nil {
		t.Fatal("expected the system clock to find the vector token expired")
	}
	verifier.Now = func() time.Time { return time.Unix(valid.NowS, 0) }
	claims, err := verifier.Verify(valid.Token, *valid.DeviceID)
	if err != nil {
		t.Fatalf("expected valid, got %v", err)
	}
	if claims["jti"] != valid.Expected.Claims["jti"] {
		t.Fatalf("jti %v", claims["jti"])
	}
}

func TestNewVerifierRejectsNoKeys(t *testing.T) {
	if _, err := NewVerifier(map[string]Key{}, "event"); err == nil {
		t.Fatal("expected an error for an empty key set")
	}
}

func TestJWKWithPrivatePartRejected(t *testing.T) {
	jwks := []byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","d":"AAAA"}]}`)
	_, err := KeysFromJWKS(jwks)
	var keyError *KeyError
	if !errors.As(err, &keyError) || keyError.Field != "keys[0].d" {
		t.Fatalf("expected a KeyError on keys[0].d, got %v", err)
	}
}

func TestShortSecretRejected(t *testing.T) {
	if _, err := HS256Key([]byte("short"), ""); err == nil {
		t.Fatal("expected an error for a 5-byte secret")
	}
}

func TestDuplicateKidRejected(t *testing.T) {
	secret := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	jwks := []byte(`{"keys":[{"kty":"oct","alg":"HS256","kid":"k","k":"` + secret + `"},{"kty":"oct","alg":"HS256","kid":"k","k":"` + secret + `"}]}`)
	if _, err := KeysFromJWKS(jwks); err == nil {
		t.Fatal("expected an error for a duplicate kid")
	}
}
