// Package waitfor polls a condition with a deadline: tests wait for what
// they need instead of sleeping for a fixed time.
package waitfor

import (
	"testing"
	"time"
)

// Condition fails the test unless cond returns nil within timeout; the
// failure says what was awaited and the last error.
func Condition(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
