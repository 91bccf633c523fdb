package controllers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/internal/scram"
	"github.com/regent-dev/regent/replica/api"
)

// The declared roles and databases (docs/api.md, "Roles and databases"):
// the operator resolves spec.roles' passwords into SCRAM verifiers and
// writes Secret <cluster>-managed, which the leader's agent applies; the
// leader's /status says how each item went, and the pass copies that into
// status.roles and status.databases.

// managedOutcome is what a pass knows of the declared objects: the version
// it wrote, and the roles it could not hand over (a missing password).
type managedOutcome struct {
	version  string
	failures map[string]string
}

// reconcileManaged writes Secret <cluster>-managed when it differs from
// what the spec says.
func (r *ReplicaSetReconciler) reconcileManaged(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) error {
	name := names.ManagedSecret(rs.Name)
	existing := &corev1.Secret{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: rs.Namespace, Name: name}, existing); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if existing.Name != "" && existing.Labels[names.LabelCluster] != rs.Name {
		return &ForeignObjectError{Kind: "Secret", Name: name, Fix: "rename or delete it: Regent keeps the cluster's declared roles there"}
	}
	var previous api.Managed
	_ = json.Unmarshal(existing.Data[names.ManagedKey], &previous)
	verifiers := map[string]string{}
	for _, role := range previous.Roles {
		verifiers[role.Name] = role.PasswordVerifier
	}

	out := managedOutcome{failures: map[string]string{}}
	var m api.Managed
	for _, role := range rs.Spec.Roles {
		if role.PasswordSecret != nil {
			// Not watched (the user's Secrets are not cached): a changed
			// password is read again within managedPasswordPeriod.
			obs.requeue(managedPasswordPeriod)
		}
		ensure := ensureOf(role.Ensure)
		mr := api.ManagedRole{Name: role.Name, Ensure: ensure, Login: ptr.Deref(role.Login, true),
			InRoles: role.InRoles, ConnectionLimit: ptr.Deref(role.ConnectionLimit, -1)}
		if ref := role.PasswordSecret; ref != nil && ensure == string(regentv1.EnsurePresent) {
			verifier, err := r.roleVerifier(ctx, rs.Namespace, *ref, verifiers[role.Name])
			if err != nil {
				out.failures[role.Name] = err.Error()
				continue
			}
			mr.PasswordVerifier = verifier
		}
		m.Roles = append(m.Roles, mr)
	}
	for _, db := range rs.Spec.Databases {
		m.Databases = append(m.Databases, api.ManagedDatabase{Name: db.Name, Ensure: ensureOf(db.Ensure),
			Owner: db.Owner, Extensions: db.Extensions})
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	out.version = api.ManagedVersion(data)
	obs.managed = &out
	if bytes.Equal(existing.Data[names.ManagedKey], data) {
		return nil
	}
	secret := corev1ac.Secret(name, rs.Namespace).
		WithLabels(names.Labels(rs.Name)).
		WithOwnerReferences(ownerReference(rs)).
		WithType(corev1.SecretTypeOpaque).
		WithData(map[string][]byte{names.ManagedKey: data})
	return r.Apply(ctx, secret, client.FieldOwner(FieldOwner), client.ForceOwnership)
}

// managedPasswordPeriod is how often a cluster whose roles take their
// passwords from Secrets reads them again.
const managedPasswordPeriod = 10 * time.Second

func ensureOf(e regentv1.Ensure) string {
	if e == "" {
		return string(regentv1.EnsurePresent)
	}
	return string(e)
}

// roleVerifier returns the SCRAM verifier of the password in ref: previous
// when it is that password's, so that an unchanged password is not set
// again with a new salt at every pass.
func (r *ReplicaSetReconciler) roleVerifier(ctx context.Context, namespace string, ref regentv1.SecretKeyRef, previous string) (string, error) {
	// The user's Secret, from the API server: the operator caches only
	// its own Secrets.
	secret, err := r.readSecret(ctx, namespace, ref.Name)
	if err != nil {
		return "", fmt.Errorf("password Secret %s: %w", ref.Name, err)
	}
	if secret.Name == "" {
		return "", fmt.Errorf("password Secret %s not found", ref.Name)
	}
	pw, ok := secret.Data[ref.Key]
	if !ok || len(pw) == 0 {
		return "", fmt.Errorf("password Secret %s has no key %q", ref.Name, ref.Key)
	}
	if previous != "" && verifierMatches(previous, string(pw)) {
		return previous, nil
	}
	v, ok, err := scram.Verifier(string(pw))
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("the password in Secret %s key %q has characters other than printable ASCII, which Regent cannot hash for PostgreSQL", ref.Name, ref.Key)
	}
	return v, nil
}

// verified remembers which verifiers match which passwords (by digest):
// each check costs 4096 rounds of PBKDF2, and passes are frequent. It is
// emptied when it reaches verifiedCap entries (every password change adds
// one), so it stays bounded; a pass after that checks each password once
// again.
var verified = struct {
	sync.Mutex
	m map[string]bool
}{m: map[string]bool{}}

var verifiedCap = 4096 // a variable for the tests

func verifierMatches(verifier, password string) bool {
	key := verifier + "\x00" + fmt.Sprintf("%x", sha256.Sum256([]byte(password)))
	verified.Lock()
	v, ok := verified.m[key]
	verified.Unlock()
	if ok {
		return v
	}
	matches := scram.Matches(verifier, password)
	verified.Lock()
	defer verified.Unlock()
	if len(verified.m) >= verifiedCap {
		clear(verified.m)
	}
	verified.m[key] = matches
	return matches
}

// managedStatus fills status.roles and status.databases: the operator's
// own refusals, else the leader's account when it answers the version the
// pass wrote, else Pending. Without a report from the leader this pass,
// an item keeps the state it had.
func managedStatus(rs *regentv1.ReplicaSet, obs *observation) {
	if obs.managed == nil {
		return
	}
	var result *api.ManagedResult
	reported := false
	if a := obs.agents[obs.holder()]; a != nil && a.Mode == api.ModeLeader {
		reported = true
		if a.Managed != nil && a.Managed.Version == obs.managed.version {
			result = a.Managed
		}
	}
	item := func(name string, items []api.ManagedItem, previous []regentv1.ManagedObjectStatus) regentv1.ManagedObjectStatus {
		if msg, ok := obs.managed.failures[name]; ok {
			return regentv1.ManagedObjectStatus{Name: name, State: regentv1.ManagedFailed, Message: msg}
		}
		if result != nil {
			for _, it := range items {
				if it.Name == name {
					return regentv1.ManagedObjectStatus{Name: name, State: regentv1.ManagedState(it.State), Message: it.Message}
				}
			}
		}
		if !reported {
			for _, p := range previous {
				if p.Name == name {
					return p
				}
			}
		}
		return regentv1.ManagedObjectStatus{Name: name, State: regentv1.ManagedPending}
	}
	var roles, dbs []regentv1.ManagedObjectStatus
	var resultRoles, resultDBs []api.ManagedItem
	if result != nil {
		resultRoles, resultDBs = result.Roles, result.Databases
	}
	for _, role := range rs.Spec.Roles {
		roles = append(roles, item(role.Name, resultRoles, rs.Status.Roles))
	}
	for _, db := range rs.Spec.Databases {
		dbs = append(dbs, item(db.Name, resultDBs, rs.Status.Databases))
	}
	rs.Status.Roles, rs.Status.Databases = roles, dbs
}
