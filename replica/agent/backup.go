package agent

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/instance"
)

// Base backups are asked for through the Kubernetes API, like everything
// else (docs/architecture.md, rule 5): the operator annotates the member
// it picked with regent.dev/backup=<id>; the agent sees it on its own pod
// and has instance take the backup (docs/backup.md). /status reports how
// it goes, and the operator records it on the Backup.

// backupIfAsked starts the backup the pod's annotation names, once.
func (a *Agent) backupIfAsked(ctx context.Context, pod *corev1.Pod, st instance.Status) {
	id := pod.Annotations[names.AnnotationBackup]
	if id == "" || !st.Running || (st.Backup != nil && st.Backup.ID == id) {
		return
	}
	a.ls.mu.Lock()
	refused := a.ls.backupRefused
	a.ls.mu.Unlock()
	if refused != nil && refused.ID == id {
		return
	}
	pw, err := a.password("replication-password")
	if err == nil {
		conninfo := fmt.Sprintf("host=%s port=5432 user=%s password=%s application_name=regent_backup",
			a.cfg.RunDir, names.ReplicationUser, conninfoQuote(pw))
		err = a.instance.StartBackup(ctx, instance.BackupRequest{ID: id, Conninfo: conninfo})
	}
	if err != nil {
		a.log.Info("Backup refused", "id", id, "error", err.Error())
		now := a.clock.Now().UTC()
		a.ls.mu.Lock()
		a.ls.backupRefused = &api.BackupProgress{ID: id, Phase: api.BackupFailed, Error: err.Error(), StartedAt: now, EndedAt: &now}
		a.ls.mu.Unlock()
		return
	}
	a.log.Info("Backup started", "id", id)
}

// backupStatus is the backup /status reports: instance's, or the one it
// refused to start.
func (a *Agent) backupStatus() *api.BackupProgress {
	b := a.ls.pgStatus.Backup
	if r := a.ls.backupRefused; r != nil && (b == nil || r.ID > b.ID) {
		return r
	}
	return b
}
