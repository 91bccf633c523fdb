package controllers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/replica/backup"
	"github.com/regent-dev/regent/replica/walship"
)

// The operator reads the cluster's store once a minute: the backups it
// holds are status.archive's truth (a Backup object can be deleted, a
// backup taken by an earlier cluster of the same path is still there), and
// retention removes what spec.backup.retention no longer keeps.

// storeReadEvery spaces the operator's reads of a cluster's store.
const storeReadEvery = time.Minute

// retentionWindow reads recoveryWindow ("7d", "36h").
func retentionWindow(s string) (time.Duration, error) {
	if len(s) < 2 {
		return 0, fmt.Errorf("recoveryWindow %q: want a number of days or hours, such as 7d or 36h", s)
	}
	n, err := strconv.Atoi(s[:len(s)-1])
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("recoveryWindow %q: want a number of days or hours, such as 7d or 36h", s)
	}
	switch s[len(s)-1] {
	case 'd':
		return time.Duration(n) * 24 * time.Hour, nil
	case 'h':
		return time.Duration(n) * time.Hour, nil
	}
	return 0, fmt.Errorf("recoveryWindow %q: want a number of days or hours, such as 7d or 36h", s)
}

// expired splits backups (oldest first) into those retention keeps and
// those it removes. The newest backup is always kept.
func expired(backups []backup.Manifest, spec *regentv1.RetentionSpec, now time.Time) (keep, drop []backup.Manifest, err error) {
	if spec == nil || len(backups) == 0 {
		return backups, nil, nil
	}
	cut := 0 // backups[:cut] go
	switch {
	case spec.Backups != nil:
		cut = max(0, len(backups)-int(*spec.Backups))
	case spec.RecoveryWindow != "":
		w, err := retentionWindow(spec.RecoveryWindow)
		if err != nil {
			return backups, nil, err
		}
		start := now.Add(-w)
		// Keep the newest backup that ended before the window starts: a
		// recovery to the window's first moment starts from it.
		for i, b := range backups {
			if b.EndTime.Before(start) {
				cut = i
			}
		}
	}
	cut = min(cut, len(backups)-1)
	return backups[cut:], backups[:cut], nil
}

// walBefore lists the WAL files of keys that no kept backup needs: the
// segments (and partial segments and backup labels) before the oldest
// kept backup's start, on any timeline. History files stay: they are
// small, and every timeline switch needs them.
func walBefore(keys []string, oldest backup.Manifest) []string {
	start := fmt.Sprintf("%08X%08X", uint64(oldest.StartLSN)>>32, (uint64(oldest.StartLSN)&0xFFFFFFFF)>>24)
	var out []string
	for _, k := range keys {
		name := strings.TrimSuffix(strings.TrimPrefix(k, walship.WALPrefix), ".zst")
		if len(name) < 24 || strings.HasSuffix(name, ".history") {
			continue
		}
		if name[8:24] < start {
			out = append(out, k)
		}
	}
	return out
}

// reconcileStore reads the store's backups into status.archive and
// applies retention, at most once a minute per cluster.
func (r *ReplicaSetReconciler) reconcileStore(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation, stores storeMounts) {
	if stores.archive == nil {
		return
	}
	key := client.ObjectKeyFromObject(rs)
	now := r.now()
	r.memory.mu.Lock()
	m := r.memory.get(key)
	completed := 0
	for _, b := range obs.backups {
		if b.Status.Phase == regentv1.BackupCompleted {
			completed++
		}
	}
	due := now.Sub(m.storeRead) >= storeReadEvery || m.storeBackups != completed
	cached := m.storeManifests
	r.memory.mu.Unlock()
	obs.storeManifests = cached
	if !due {
		obs.requeue(storeReadEvery)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	manifests, err := r.retain(ctx, rs, obs, stores, now)
	r.memory.mu.Lock()
	m.storeRead, m.storeBackups = now, completed
	if err == nil {
		m.storeManifests = manifests
	}
	r.memory.mu.Unlock()
	if err != nil {
		r.warnOnce(rs, key, regentv1.EventObjectStoreInvalid, "ReadStore", "reading the object store: "+err.Error(), true)
		return
	}
	obs.storeManifests = manifests
	obs.requeue(storeReadEvery)
}

// retain lists the store's backups, removes those retention drops with
// the WAL before the oldest kept one, and returns the kept ones.
func (r *ReplicaSetReconciler) retain(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation, stores storeMounts, now time.Time) ([]backup.Manifest, error) {
	store, err := r.openStore(ctx, rs.Namespace, stores.archive, stores.archivePath)
	if err != nil {
		return nil, err
	}
	all, err := backup.List(ctx, store)
	if err != nil && len(all) == 0 {
		return nil, err
	}
	keep, drop, err := expired(all, rs.Spec.Backup.Retention, now)
	if err != nil {
		return all, err
	}
	if len(drop) == 0 {
		return keep, nil
	}
	for _, b := range drop {
		// The manifest first: a backup without one does not exist.
		if err := store.Remove(ctx, backup.ManifestKey(b.ID), backup.DataKey(b.ID)); err != nil {
			return all, err
		}
	}
	wal, err := store.List(ctx, walship.WALPrefix)
	if err != nil {
		return keep, err
	}
	var keys []string
	for _, o := range wal {
		keys = append(keys, o.Key)
	}
	old := walBefore(keys, keep[0])
	if err := store.Remove(ctx, old...); err != nil {
		return keep, err
	}
	ids := make([]string, 0, len(drop))
	for _, b := range drop {
		ids = append(ids, b.ID)
	}
	for _, b := range obs.backups {
		if slices.Contains(ids, b.Status.ID) {
			if err := r.Delete(ctx, b); err != nil && !apierrors.IsNotFound(err) {
				return keep, err
			}
		}
	}
	r.Recorder.Eventf(rs, nil, corev1.EventTypeNormal, regentv1.EventBackupCompleted, "Retain",
		"Retention removed backups %s and %d WAL files before %s from the store", strings.Join(ids, ", "), len(old), keep[0].ID)
	return keep, nil
}

// firstRecoverable is the earliest time a recovery reaches: the end of the
// oldest backup kept.
func firstRecoverable(manifests []backup.Manifest) *metav1.Time {
	if len(manifests) == 0 {
		return nil
	}
	return &metav1.Time{Time: manifests[0].EndTime}
}
