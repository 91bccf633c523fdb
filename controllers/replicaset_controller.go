// Package controllers holds the operator's reconciler of ReplicaSets: it
// renders a cluster's children, runs the failover logic (failover_reconcile.go
// around the pure decision in controllers/failover), keeps the pods' role
// labels in step with the Lease (leadership.go) and reports status.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/controllers/failover"
	"github.com/regent-dev/regent/internal/leadership"
	"github.com/regent-dev/regent/internal/lsn"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/api"
	"github.com/regent-dev/regent/replica/backup"
)

// FieldOwner is the server-side apply field manager of everything the
// operator renders.
const FieldOwner = "regent-operator"

// ReplicaSetReconciler reconciles a ReplicaSet: it applies the cluster's
// children, bootstraps its leadership Lease, keeps the pods' role labels in
// step with the Lease, and reports status.
type ReplicaSetReconciler struct {
	client.Client
	// APIReader reads Secrets straight from the API server: a password must
	// never be regenerated because a cache had not seen its Secret yet.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Images    Images
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Agents reads the agents' /status; nil means HTTPS on <pod IP>:8008.
	Agents AgentReader
	// NetworkPolicies, when set, gives every cluster a NetworkPolicy.
	NetworkPolicies *NetworkPolicies

	memory  memory
	applied appliedMemo
}

// +kubebuilder:rbac:groups=regent.dev,resources=replicasets,verbs=get;list;watch;update;patch
// +kubebuilder:rbac:groups=regent.dev,resources=replicasets/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=regent.dev,resources=replicasets/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,resources=statefulsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=services;secrets;serviceaccounts;configmaps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile follows cluster-api's spine: get (NotFound is success), compute,
// apply children, and one deferred status patch. It adds no finalizer:
// every child goes with the ReplicaSet through owner references, and the data
// volumes deliberately stay (pvcRetentionPolicy), so deletion needs no
// cleanup of ours.
func (r *ReplicaSetReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	log := ctrl.LoggerFrom(ctx)

	rs := &regentv1.ReplicaSet{}
	if err := r.Get(ctx, req.NamespacedName, rs); err != nil {
		if apierrors.IsNotFound(err) {
			r.memory.forget(req.NamespacedName)
			r.applied.forget(req.NamespacedName)
			forgetMetrics(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !rs.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}

	before := rs.DeepCopy()
	obs := &observation{}
	defer func() {
		r.computeStatus(rs, obs, retErr)
		if equality.Semantic.DeepEqual(before.Status, rs.Status) {
			return
		}
		// Optimistic locking: a pass that worked from a stale cache must
		// not overwrite a newer status (its conditions would flap their
		// transition times); it fails with a conflict and runs again.
		patch := client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})
		err := r.Status().Patch(ctx, rs, patch)
		switch {
		case err == nil, apierrors.IsNotFound(err):
		case apierrors.IsConflict(err):
			// A newer ReplicaSet exists (often this reconciler's own last
			// status, not in the cache yet). Status changes wake no pass
			// (SetupWithManager), so look again shortly.
			log.V(1).Info("Status changed under this pass; the next pass recomputes it")
			if result.RequeueAfter == 0 || result.RequeueAfter > statusRetry {
				result.RequeueAfter = statusRetry
			}
		case retErr == nil:
			retErr = fmt.Errorf("patch status: %w", err)
		}
	}()

	step, err := r.reconcileChildren(ctx, rs, obs)
	if err != nil {
		obs.failedStep = step
		var foreign *ForeignObjectError
		if errors.As(err, &foreign) {
			obs.foreign = foreign
		}
		r.Recorder.Eventf(rs, nil, corev1.EventTypeWarning, regentv1.EventReconcileFailed, step,
			"Could not %s: %v", step, err)
		return ctrl.Result{}, fmt.Errorf("%s: %w", step, err)
	}
	log.V(1).Info("Reconciled", "epoch", obs.epoch(), "pods", len(obs.pods))
	return ctrl.Result{RequeueAfter: obs.requeueAfter}, nil
}

// statusRetry is how soon a pass whose status patch met a newer
// ReplicaSet runs again.
const statusRetry = 200 * time.Millisecond

// observation is what one pass saw of the world; status is computed from it
// alone.
type observation struct {
	lease *coordinationv1.Lease
	pods  []corev1.Pod
	// failedStep names what could not be applied, for the Degraded condition.
	failedStep string
	// foreign is set when an object the cluster needs belongs to someone
	// else.
	foreign *ForeignObjectError
	// agents are the agents' reports, by pod; decision the failover
	// decision of this pass; leaderLSN the leader's last known position.
	agents    map[string]*api.Status
	decision  *failover.Decision
	leaderLSN lsn.LSN
	// unstandingSince: since when, by the operator's clock, each follower
	// not standing has been seen so (clusterMemory.noteStanding).
	unstandingSince map[string]time.Time
	// switchoverRefused says why a requested switchover is not done.
	switchoverRefused string
	// certificates are the cluster's CA and its members' certificates' expiry.
	certificates *certificates
	// requeueAfter is when to look again at the latest (0: on events).
	requeueAfter time.Duration
	// storeInvalid says why spec.backup.objectStore cannot be used.
	storeInvalid string
	// backups are the cluster's Backups; nextBackup is when the schedule
	// takes the next.
	backups    []*regentv1.Backup
	nextBackup *time.Time
	// storeManifests are the backups the store holds, as last read.
	storeManifests []backup.Manifest
	// managed is the declared roles and databases the pass wrote (nil:
	// not written this pass).
	managed *managedOutcome
}

// requeue asks for another pass after d at the latest.
func (o *observation) requeue(d time.Duration) {
	d = max(d, 50*time.Millisecond)
	if o.requeueAfter == 0 || d < o.requeueAfter {
		o.requeueAfter = d
	}
}

func (o *observation) epoch() int64 {
	if o.lease == nil || o.lease.Spec.LeaseTransitions == nil {
		return 0
	}
	return int64(*o.lease.Spec.LeaseTransitions)
}

// protocol is the leadership state the pass's Lease carries (the zero
// State when there is none).
func (o *observation) protocol() leadership.State {
	if o.lease == nil {
		return leadership.State{}
	}
	return leadership.Of(o.lease)
}

func (o *observation) holder() string {
	if o.lease == nil || o.lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *o.lease.Spec.HolderIdentity
}

// reconcileChildren applies every child in dependency order. It returns the
// step that failed, in words that fit "could not ...".
func (r *ReplicaSetReconciler) reconcileChildren(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) (string, error) {
	certs, err := r.reconcileCA(ctx, rs)
	if err != nil {
		return "make the cluster's CA", err
	}
	obs.certificates = certs
	// apply applies a child after checking that an object of that name is
	// not someone else's: the operator never takes over an object it did
	// not create.
	apply := func(step string, obj runtime.ApplyConfiguration, existing client.Object, name string) error {
		if err := r.ensureOurs(ctx, rs, existing, name); err != nil {
			return err
		}
		if err := r.applyUnlessCurrent(ctx, client.ObjectKeyFromObject(rs), obj, existing, name); err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		return nil
	}
	lease, err := r.reconcileLease(ctx, rs)
	if err != nil {
		return "create the leader Lease", err
	}
	obs.lease = lease

	// Leadership first: a failover must not wait behind the other
	// children's reads and applies (a pass runs every 100 ms while an
	// election waits).
	pods, err := r.listPods(ctx, rs)
	if err != nil {
		return "list pods", err
	}
	obs.pods = pods
	if err := r.reconcileFailover(ctx, rs, obs); err != nil {
		return "fail over", err
	}
	// The Secrets and the agents' RBAC: read from the API server and
	// applied when changed, after leadership (a failover's passes poll
	// every 100 ms), before the StatefulSet whose pods need them.
	if err := r.reconcileSecrets(ctx, rs, certs.ca.CertPEM); err != nil {
		return "apply Secrets", err
	}
	agent := names.Agent(rs.Name)
	if err := apply("apply ServiceAccount", renderServiceAccount(rs), &corev1.ServiceAccount{}, agent); err != nil {
		return "apply agent RBAC", err
	}
	if err := apply("apply Role", renderRole(rs), &rbacv1.Role{}, agent); err != nil {
		return "apply agent RBAC", err
	}
	if err := apply("apply RoleBinding", renderRoleBinding(rs), &rbacv1.RoleBinding{}, agent); err != nil {
		return "apply agent RBAC", err
	}

	if err := r.reconcileMemberCertificates(ctx, rs, obs); err != nil {
		return "issue the members' certificates", err
	}
	for _, svc := range renderServices(rs, obs.epoch()) {
		if err := apply("apply Service "+*svc.Name, svc, &corev1.Service{}, *svc.Name); err != nil {
			return "apply Services", err
		}
	}

	claimSize, err := rs.StorageSize()
	if err != nil {
		return "read spec.storage.size", err
	}
	sts := &appsv1.StatefulSet{}
	switch err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: names.StatefulSet(rs.Name)}, sts); {
	case err == nil:
		// Claim templates are immutable: keep the one the StatefulSet has,
		// and grow the claims themselves.
		if size, ok := claimTemplateSize(sts); ok {
			claimSize = size
		}
	case !apierrors.IsNotFound(err):
		return "read the StatefulSet", err
	}
	stores := r.reconcileStoreMounts(ctx, rs, obs)
	if err := apply("apply StatefulSet", renderStatefulSet(rs, r.Images, claimSize, stores),
		&appsv1.StatefulSet{}, names.StatefulSet(rs.Name)); err != nil {
		return "apply the StatefulSet", err
	}

	if err := r.reconcilePodDisruptionBudget(ctx, rs, apply); err != nil {
		return "apply the PodDisruptionBudget", err
	}
	if err := r.reconcileNetworkPolicy(ctx, rs, apply); err != nil {
		return "apply the NetworkPolicy", err
	}

	if err := r.growVolumes(ctx, rs); err != nil {
		return "grow the data volumes", err
	}
	if err := r.reconcileLeadership(ctx, rs, obs); err != nil {
		return "label pods with their roles", err
	}
	if err := r.reconcileRollout(ctx, rs, obs); err != nil {
		return "roll out the pod template", err
	}
	if err := r.reconcileBackups(ctx, rs, obs, stores); err != nil {
		return "take a backup", err
	}
	r.reconcileStore(ctx, rs, obs, stores)
	if err := r.reconcileManaged(ctx, rs, obs); err != nil {
		return "apply the declared roles and databases", err
	}
	return "", nil
}

func (r *ReplicaSetReconciler) reconcilePodDisruptionBudget(ctx context.Context, rs *regentv1.ReplicaSet,
	apply func(string, runtime.ApplyConfiguration, client.Object, string) error) error {
	if rs.PDBEnabled() {
		return apply("apply PodDisruptionBudget", renderPodDisruptionBudget(rs),
			&policyv1.PodDisruptionBudget{}, names.PodDisruptionBudget(rs.Name))
	}
	pdb := &policyv1.PodDisruptionBudget{}
	err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: names.PodDisruptionBudget(rs.Name)}, pdb)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !metav1.IsControlledBy(pdb, rs) {
		return nil
	}
	return client.IgnoreNotFound(r.Delete(ctx, pdb))
}

// listPods returns the pods of rs, those the StatefulSet made and any left
// over from an earlier one.
func (r *ReplicaSetReconciler) listPods(ctx context.Context, rs *regentv1.ReplicaSet) ([]corev1.Pod, error) {
	list := &corev1.PodList{}
	if err := r.List(ctx, list, client.InNamespace(rs.Namespace),
		client.MatchingLabels(names.SelectorLabels(rs.Name))); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// ForeignObjectError says that an object the ReplicaSet needs under a given
// name exists and belongs to someone else.
type ForeignObjectError struct {
	Kind, Name string
	// Fix says what a person can do ("rename or delete it" when empty).
	Fix string
}

func (e *ForeignObjectError) Error() string {
	fix := e.Fix
	if fix == "" {
		fix = "rename or delete it"
	}
	return fmt.Sprintf("%s %s exists and is not managed by this ReplicaSet: %s", e.Kind, e.Name, fix)
}

// ensureOurs fails with a *ForeignObjectError when an object of name exists
// and this ReplicaSet is not its controller. The cache holds only objects
// labelled as Regent's, so a miss there is confirmed with the API server.
func (r *ReplicaSetReconciler) ensureOurs(ctx context.Context, rs *regentv1.ReplicaSet, obj client.Object, name string) error {
	key := client.ObjectKey{Namespace: rs.Namespace, Name: name}
	err := r.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		err = r.APIReader.Get(ctx, key, obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
	}
	if err != nil {
		return err
	}
	if metav1.IsControlledBy(obj, rs) {
		return nil
	}
	kind := fmt.Sprintf("%T", obj)
	if gvk, err := r.GroupVersionKindFor(obj); err == nil {
		kind = gvk.Kind
	}
	return &ForeignObjectError{Kind: kind, Name: name}
}

// SetupWithManager registers the reconciler: it wakes on its ReplicaSets,
// on changes to the children it owns, and on the pods, Secrets and Lease of
// its clusters. Two kinds of change wake nothing: the ReplicaSet's own
// status (each pass writes the members' positions, and under writes they
// always move: every pass would start the next), and a Lease renewal,
// every second, which is only noted (leaseChangeNeedsAPass).
func (r *ReplicaSetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.Add(renewalWatch{r: r, cache: mgr.GetCache()}); err != nil {
		return err
	}
	if err := mgr.Add(apiContact{r: r, reader: mgr.GetAPIReader()}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&regentv1.ReplicaSet{}, builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{},
			predicate.AnnotationChangedPredicate{}, predicate.LabelChangedPredicate{}))).
		Owns(&appsv1.StatefulSet{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&rbacv1.Role{}).
		Owns(&rbacv1.RoleBinding{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		// Pods belong to the StatefulSet, not to the ReplicaSet, and the
		// Secrets and the Lease have no owner when they are kept with the
		// data (keptWithTheData): map them to their cluster by label.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(clusterOfObject)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(clusterOfObject)).
		Watches(&regentv1.Backup{}, handler.EnqueueRequestsFromMapFunc(clusterOfBackup)).
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(clusterOfObject),
			builder.WithPredicates(predicate.Funcs{UpdateFunc: r.leaseChangeNeedsAPass})).
		Complete(r)
}

// leaseChangeNeedsAPass lets every Lease change through but a plain
// renewal (the holder's agent moving renewTime and the position it renews
// with, nothing else), which it
// notes in the memory as a pass would, by the operator's clock: the
// failover logic judges expiry from that, and a healthy cluster's passes
// are already due at the expiry it last computed (failover.Decide's
// Until), where they find the newer renewal and look again later.
func (r *ReplicaSetReconciler) leaseChangeNeedsAPass(e event.UpdateEvent) bool {
	old, ok1 := e.ObjectOld.(*coordinationv1.Lease)
	cur, ok2 := e.ObjectNew.(*coordinationv1.Lease)
	if !ok1 || !ok2 || old.Spec.RenewTime == nil || cur.Spec.RenewTime == nil {
		return true
	}
	a, b := old.DeepCopy(), cur.DeepCopy()
	for _, l := range []*coordinationv1.Lease{a, b} {
		l.Spec.RenewTime, l.ResourceVersion, l.ManagedFields = nil, "", nil
		delete(l.Annotations, names.AnnotationLeaderLSN)
	}
	if !equality.Semantic.DeepEqual(a, b) {
		return true
	}
	cluster := cur.Labels[names.LabelCluster]
	if cluster == "" {
		return true
	}
	r.memory.noteRenewal(types.NamespacedName{Namespace: cur.Namespace, Name: cluster}, cur, r.now())
	return false
}

// clusterOfObject maps an object labelled with a cluster to its ReplicaSet.
func clusterOfObject(_ context.Context, obj client.Object) []reconcile.Request {
	cluster := obj.GetLabels()[names.LabelCluster]
	if cluster == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: obj.GetNamespace(), Name: cluster}}}
}

// CacheOptions keeps the manager's informers to the objects Regent labels
// as its own, so that the operator does not hold every pod, Secret and
// node Lease of the cluster in memory. ReplicaSets are not filtered.
func CacheOptions() cache.Options {
	managed := labels.SelectorFromSet(labels.Set{names.LabelManagedBy: names.ManagedBy})
	byLabel := cache.ByObject{Label: managed}
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   byLabel,
		&corev1.Secret{}:                byLabel,
		&corev1.ConfigMap{}:             byLabel,
		&corev1.Service{}:               byLabel,
		&corev1.ServiceAccount{}:        byLabel,
		&corev1.PersistentVolumeClaim{}: byLabel,
		&appsv1.StatefulSet{}:           byLabel,
		&rbacv1.Role{}:                  byLabel,
		&rbacv1.RoleBinding{}:           byLabel,
		&policyv1.PodDisruptionBudget{}: byLabel,
		&networkingv1.NetworkPolicy{}:   byLabel,
		&coordinationv1.Lease{}:         byLabel,
	}}
}

func (r *ReplicaSetReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}
