package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// appliedMemo lets a pass skip the server-side apply of a child that is
// already as rendered. Every pass used to apply every child: a dozen
// writes per pass, which throttled the operator's client during a
// failover (a pass every 100 ms) and would cost 1000 clusters a dozen
// requests each every 10 s at rest. It remembers, per child, the hash of
// the configuration last applied and the resourceVersion the API server
// answered; a pass applies again when the rendering changes or when the
// object does (someone else's change, a deletion: its version moves).
// Lost on restart: every child is applied once again.
type appliedMemo struct {
	mu sync.Mutex
	m  map[types.NamespacedName]map[string]appliedRecord
}

type appliedRecord struct{ hash, resourceVersion string }

// unchanged says whether child key of cluster was last applied with hash
// and is still at the version that apply left.
func (a *appliedMemo) unchanged(cluster types.NamespacedName, key, hash, resourceVersion string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	rec, ok := a.m[cluster][key]
	return ok && resourceVersion != "" && rec == appliedRecord{hash: hash, resourceVersion: resourceVersion}
}

func (a *appliedMemo) record(cluster types.NamespacedName, key string, rec appliedRecord) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.m == nil {
		a.m = map[types.NamespacedName]map[string]appliedRecord{}
	}
	if a.m[cluster] == nil {
		a.m[cluster] = map[string]appliedRecord{}
	}
	a.m[cluster][key] = rec
}

func (a *appliedMemo) forget(cluster types.NamespacedName) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.m, cluster)
}

// applyUnlessCurrent applies obj, a child of cluster named name, unless
// existing (as last read: empty when missing) is still what the last apply
// of the same configuration left.
func (r *ReplicaSetReconciler) applyUnlessCurrent(ctx context.Context, cluster types.NamespacedName, obj runtime.ApplyConfiguration,
	existing client.Object, name string) error {
	data, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	hash := hex.EncodeToString(sum[:])
	key := fmt.Sprintf("%T/%s", existing, name)
	if r.applied.unchanged(cluster, key, hash, existing.GetResourceVersion()) {
		return nil
	}
	if err := r.Apply(ctx, obj, client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return err
	}
	// Apply decoded the API server's answer into obj.
	var answered struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if data, err := json.Marshal(obj); err == nil && json.Unmarshal(data, &answered) == nil {
		r.applied.record(cluster, key, appliedRecord{hash: hash, resourceVersion: answered.Metadata.ResourceVersion})
	}
	return nil
}
