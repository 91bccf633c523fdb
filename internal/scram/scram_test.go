package scram

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
)

// RFC 7677's example: user "user", password "pencil", salt
// W22ZaJ0SNY7soEsUEjb6gQ==, 4096 iterations. The server's final message
// carries ServerSignature = HMAC(ServerKey, AuthMessage); the verifier's
// ServerKey must reproduce it, and its StoredKey must be H(ClientKey) for
// the ClientProof the client sent.
func TestVerifierMatchesRFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	v, err := build("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	head, keys, _ := strings.Cut(strings.TrimPrefix(v, "SCRAM-SHA-256$"), "$")
	if head != "4096:W22ZaJ0SNY7soEsUEjb6gQ==" {
		t.Fatalf("iterations and salt %q", head)
	}
	stored64, server64, _ := strings.Cut(keys, ":")
	storedKey, _ := base64.StdEncoding.DecodeString(stored64)
	serverKey, _ := base64.StdEncoding.DecodeString(server64)
	auth := "n=user,r=rOprNGfwEbeRWgbNEkqO," +
		"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096," +
		"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	if got := base64.StdEncoding.EncodeToString(mac(serverKey, auth)); got != "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=" {
		t.Errorf("server signature %s", got)
	}
	proof, _ := base64.StdEncoding.DecodeString("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
	sig := mac(storedKey, auth)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ sig[i]
	}
	if sum := sha256.Sum256(clientKey); !hmac.Equal(sum[:], storedKey) {
		t.Error("the client's proof does not verify against StoredKey")
	}
}

func TestVerifierRefusesWhatSASLprepWouldChange(t *testing.T) {
	if _, ok, err := Verifier("Kähler"); ok || err != nil {
		t.Errorf("a non-ASCII password got a verifier (%v)", err)
	}
	v, ok, err := Verifier("abcDEF123")
	if !ok || err != nil || !strings.HasPrefix(v, "SCRAM-SHA-256$4096:") {
		t.Errorf("%q, %v, %v", v, ok, err)
	}
	if w, _, _ := Verifier("abcDEF123"); w == v {
		t.Error("two verifiers of one password share a salt")
	}
}

// A verifier matches its own password only.
func TestMatches(t *testing.T) {
	v, ok, err := Verifier("s3cret")
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if !Matches(v, "s3cret") {
		t.Error("a verifier does not match its password")
	}
	for _, bad := range []string{"s3cret!", ""} {
		if Matches(v, bad) {
			t.Errorf("matches %q", bad)
		}
	}
	if Matches("md5abc", "s3cret") || Matches("SCRAM-SHA-256$x", "s3cret") {
		t.Error("matches a malformed verifier")
	}
}
