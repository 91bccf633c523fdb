package controllers

import (
	"fmt"
	"testing"

	"github.com/regent-dev/regent/internal/scram"
)

// The memo of checked passwords answers as the check does, and stays
// bounded however many passwords pass through it.
func TestVerifiedPasswordsAreRememberedWithinABound(t *testing.T) {
	v, ok, err := scram.Verifier("right")
	if err != nil || !ok {
		t.Fatalf("verifier: %v %v", ok, err)
	}
	for range 2 { // checked, then remembered
		if !verifierMatches(v, "right") {
			t.Error("the verifier's own password does not match")
		}
	}
	if verifierMatches(v, "wrong") {
		t.Error("another password matches")
	}
	defer func(n int) { verifiedCap = n }(verifiedCap)
	verifiedCap = 8
	for i := range 20 {
		verifierMatches(v, fmt.Sprint("other-", i))
		verified.Lock()
		n := len(verified.m)
		verified.Unlock()
		if n > verifiedCap {
			t.Fatalf("%d passwords remembered, want at most %d", n, verifiedCap)
		}
	}
	if !verifierMatches(v, "right") {
		t.Error("after the memo was emptied, the verifier's own password does not match")
	}
}
