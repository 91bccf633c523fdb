package controllers

import (
	"math"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/names"
)

func TestDesiredRoleLabels(t *testing.T) {
	lease := func(holder string, epoch, sealed int64) *coordinationv1.Lease {
		l := &coordinationv1.Lease{}
		leadership.Encode(leadership.State{Holder: holder, Epoch: epoch, SealedEpoch: sealed}, l)
		return l
	}
	pod := func(name, role, epoch string, ready bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}}
		if role != "" {
			p.Labels[names.LabelRole] = role
		}
		if epoch != "" {
			p.Labels[names.LabelEpoch] = epoch
		}
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
		return p
	}
	leader := func(epoch string) roleLabels { return roleLabels{role: names.RoleLeader, epoch: epoch} }
	tests := []struct {
		name       string
		pod        *corev1.Pod
		lease      *coordinationv1.Lease
		want       roleLabels
		wantChange bool
	}{
		{"new cluster: holder becomes leader before it is ready",
			pod("db-0", "", "", false), lease("db-0", 1, 0), leader("1"), true},
		{"holder already labelled", pod("db-0", "leader", "1", true), lease("db-0", 1, 0), leader("1"), false},
		{"holder labelled at an older epoch", pod("db-1", "leader", "2", true), lease("db-1", 3, 0), leader("3"), true},
		{"holder that was a follower", pod("db-1", "follower", "", true), lease("db-1", 2, 0), leader("2"), true},
		{"sealed epoch: holder is not labelled again",
			pod("db-0", "", "", true), lease("db-0", 1, 1), roleLabels{}, false},
		{"sealed epoch: a labelled holder leaves <rs>-leader at once",
			pod("db-0", "leader", "1", true), lease("db-0", 1, 1), roleLabels{}, true},
		{"sealed epoch: a holder labelled follower keeps it",
			pod("db-0", "follower", "", true), lease("db-0", 1, 1), roleLabels{role: names.RoleFollower}, false},
		{"a seal of every epoch (how an unreadable seal reads) counts as sealed",
			pod("db-0", "", "", true), lease("db-0", 1, math.MaxInt64), roleLabels{}, false},
		{"seal of an older epoch does not stop the new leader",
			pod("db-1", "", "", true), lease("db-1", 2, 1), leader("2"), true},
		{"a second leader loses its claim",
			pod("db-1", "leader", "1", true), lease("db-0", 1, 0), roleLabels{}, true},
		{"a stray epoch label goes",
			pod("db-1", "follower", "1", true), lease("db-0", 1, 0), roleLabels{}, true},
		{"ready non-holder becomes a follower",
			pod("db-2", "", "", true), lease("db-0", 1, 0), roleLabels{role: names.RoleFollower}, true},
		{"unready non-holder stays unconfirmed",
			pod("db-2", "", "", false), lease("db-0", 1, 0), roleLabels{}, false},
		{"a follower that is not ready keeps its label",
			pod("db-2", "follower", "", false), lease("db-0", 1, 0), roleLabels{role: names.RoleFollower}, false},
		{"no lease: nothing changes",
			pod("db-0", "", "", true), nil, roleLabels{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, change := desiredRoleLabels(tt.pod, tt.lease)
			if change != tt.wantChange || (change && got != tt.want) {
				t.Errorf("desiredRoleLabels = %+v, %v; want %+v, %v", got, change, tt.want, tt.wantChange)
			}
		})
	}
}

func TestMarkedNotReadyFromOutside(t *testing.T) {
	pod := func(ready, containersReady corev1.ConditionStatus, gates int) *corev1.Pod {
		p := &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: ready}, {Type: corev1.ContainersReady, Status: containersReady}}}}
		for range gates {
			p.Spec.ReadinessGates = append(p.Spec.ReadinessGates, corev1.PodReadinessGate{ConditionType: "x"})
		}
		return p
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"ready", pod(corev1.ConditionTrue, corev1.ConditionTrue, 0), false},
		{"its own probe failed (the kubelet says so)", pod(corev1.ConditionFalse, corev1.ConditionFalse, 0), false},
		{"the node controller marked it", pod(corev1.ConditionFalse, corev1.ConditionTrue, 0), true},
		{"a readiness gate not met", pod(corev1.ConditionFalse, corev1.ConditionTrue, 1), false},
	} {
		if got := markedNotReadyFromOutside(tc.pod); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
