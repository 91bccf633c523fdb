// Package scram computes PostgreSQL's SCRAM-SHA-256 password verifiers, so
// that a role's password can be set without the password itself ever
// reaching the server (and its logs): `ALTER ROLE … PASSWORD
// 'SCRAM-SHA-256$…'` stores the verifier as it is (RFC 5802, RFC 7677;
// PostgreSQL's scram_build_secret).
package scram

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
)

// Iterations is PostgreSQL's default scram_iterations.
const Iterations = 4096

// Verifier returns the verifier of password with a random salt. ok is
// false for a password SASLprep would change (anything but printable
// ASCII): libpq normalizes those before it proves them, and this package
// does not implement SASLprep, so the caller must set such a password in
// clear text instead.
func Verifier(password string) (verifier string, ok bool, err error) {
	for _, c := range []byte(password) {
		if c < 0x20 || c > 0x7e {
			return "", false, nil
		}
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", false, err
	}
	v, err := build(password, salt, Iterations)
	return v, err == nil, err
}

func build(password string, salt []byte, iterations int) (string, error) {
	salted, err := pbkdf2.Key(sha256.New, password, salt, iterations, sha256.Size)
	if err != nil {
		return "", err
	}
	clientKey := mac(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	serverKey := mac(salted, "Server Key")
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("SCRAM-SHA-256$%d:%s$%s:%s", iterations, b64(salt), b64(storedKey[:]), b64(serverKey)), nil
}

func mac(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// Matches says whether verifier is password's: the same salt and
// iterations give the same keys. A caller keeps a verifier that matches
// rather than making a new one (a new salt) at every pass.
func Matches(verifier, password string) bool {
	var iterations int
	var rest string
	if _, err := fmt.Sscanf(verifier, "SCRAM-SHA-256$%d:%s", &iterations, &rest); err != nil || iterations <= 0 {
		return false
	}
	salt64, _, ok := strings.Cut(rest, "$")
	if !ok {
		return false
	}
	salt, err := base64.StdEncoding.DecodeString(salt64)
	if err != nil {
		return false
	}
	v, err := build(password, salt, iterations)
	return err == nil && hmac.Equal([]byte(v), []byte(verifier))
}
