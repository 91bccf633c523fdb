package controllers

import (
	"context"
	"crypto/rand"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// reconcileSecrets applies the superuser, replication and app Secrets. A
// password is generated once, when its Secret has none, and then read back
// on every pass: never overwritten. A Secret the user created beforehand
// keeps the user's password. The app Secret also carries the CA's
// certificate (caPEM), which its URIs' sslmode=verify-full needs.
func (r *ReplicaSetReconciler) reconcileSecrets(ctx context.Context, rs *regentv1.ReplicaSet, caPEM []byte) error {
	for _, s := range []struct {
		name, user string
		app        bool
	}{
		{names.SuperuserSecret(rs.Name), names.SuperuserName, false},
		{names.ReplicationSecret(rs.Name), names.ReplicationUser, false},
		{names.AppSecret(rs.Name), rs.AppOwner(), true},
	} {
		existing, err := r.readOwnSecret(ctx, rs.Namespace, s.name)
		if err != nil {
			return fmt.Errorf("secret %s: %w", s.name, err)
		}
		// A Secret of that name that is not this cluster's (labelled so
		// by Regent, or by a person who made it for the cluster) is never
		// taken over: its password, its owner and its data are someone
		// else's.
		if existing.Name != "" && existing.Labels[names.LabelCluster] != rs.Name {
			return &ForeignObjectError{Kind: "Secret", Name: s.name,
				Fix: fmt.Sprintf("label it %s=%s for this cluster to use the password it holds, or rename or delete it", names.LabelCluster, rs.Name)}
		}
		password := string(existing.Data[corev1.BasicAuthPasswordKey])
		created := password == ""
		if created {
			if password, err = generatePassword(); err != nil {
				return err
			}
		}
		c := credentials{secret: s.name, username: s.user, password: password}
		secret := renderSecret(rs, c, s.app, caPEM)
		if existing.Type != "" {
			// A Secret's type cannot change: one the user made
			// beforehand (say Opaque) keeps its type.
			secret.WithType(existing.Type)
		}
		if err := r.applyUnlessCurrent(ctx, client.ObjectKeyFromObject(rs), secret, existing, s.name); err != nil {
			return fmt.Errorf("apply secret %s: %w", s.name, err)
		}
		if created {
			r.Recorder.Eventf(rs, nil, corev1.EventTypeNormal, regentv1.EventSecretCreated, "CreateSecret",
				"Generated the password of %s in Secret %s", s.user, s.name)
		}
	}
	return nil
}

// readOwnSecret reads one of the cluster's Secrets from the cache, which
// holds the Secrets Regent labelled, and from the API server when the
// cache has none of that name (not made yet, not seen yet, or made by a
// person without the label): a password is never generated for a Secret
// the cache merely had not seen. A cached Secret behind a person's change
// is normally harmless: its version is the one applyUnlessCurrent left, so
// nothing is applied from it until the cache has the change. The one
// window left, a change made while the cache has not yet seen the
// operator's own last apply, is as narrow as a direct read's (read, then
// apply) always was.
func (r *ReplicaSetReconciler) readOwnSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		return r.readSecret(ctx, namespace, name)
	}
	return secret, err
}

// readSecret reads a Secret from the API server; a missing one comes back
// empty.
func (r *ReplicaSetReconciler) readSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		return &corev1.Secret{}, nil
	}
	return secret, err
}

// passwordAlphabet has no character that needs quoting in a URI, a .pgpass
// line or a shell.
const passwordAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// generatePassword returns 32 random characters: about 190 bits.
func generatePassword() (string, error) {
	const n = 32
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate password: %w", err)
	}
	// 256 is not a multiple of 62: reject bytes past the last full block so
	// that every character is equally likely.
	out := make([]byte, 0, n)
	for len(out) < n {
		for _, b := range buf {
			if int(b) < 256-256%len(passwordAlphabet) && len(out) < n {
				out = append(out, passwordAlphabet[int(b)%len(passwordAlphabet)])
			}
		}
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("generate password: %w", err)
		}
	}
	return string(out), nil
}
