package controllers

import (
	"testing"
	"time"
)

func TestScheduledBackupsAreDueOncePerSlotAndOnceAfterAnOutage(t *testing.T) {
	sched, err := parseSchedule("0 3 * * *")
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	at := func(d, h, m int) time.Time {
		return day.AddDate(0, 0, d).Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
	}
	for _, tc := range []struct {
		name      string
		last, now time.Time
		due       bool
		next      time.Time
	}{
		{"before the slot", at(0, 1, 0), at(0, 2, 59), false, at(0, 3, 0)},
		{"at the slot", at(0, 1, 0), at(0, 3, 0), true, at(1, 3, 0)},
		{"just made", at(0, 3, 0), at(0, 3, 1), false, at(1, 3, 0)},
		{"three slots missed: one backup now", at(0, 3, 0), at(3, 12, 0), true, at(4, 3, 0)},
	} {
		due, next := dueBackup(sched, tc.last, tc.now)
		if due != tc.due || !next.Equal(tc.next) {
			t.Errorf("%s: due %v next %s, want %v %s", tc.name, due, next, tc.due, tc.next)
		}
	}
	for _, bad := range []string{"", "every day", "0 3 * *", "61 3 * * *"} {
		if _, err := parseSchedule(bad); err == nil {
			t.Errorf("schedule %q accepted", bad)
		}
	}
}
