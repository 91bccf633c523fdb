package controllers

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/instance"
	"github.com/regent-dev/regent/replica/objectstore"
)

// Object stores reach the pods as an environment variable (their place:
// endpoint, bucket, path, region) and files in the secrets volume (their
// credentials), never in the pod template's text (docs/backup.md). The
// operator reads the same Secrets to reach the stores itself: for the
// status, retention and a restore's first epoch.

// storeMounts are the stores a cluster's pods reach.
type storeMounts struct {
	// archive is spec.backup.objectStore when its Secret can be used;
	// recovery is spec.bootstrap.recovery's store.
	archive, recovery *regentv1.ObjectStoreSpec
	// archivePath and recoveryPath are their paths, defaults applied.
	archivePath, recoveryPath string
}

// storePath is spec's path, or <namespace>/<name>.
func storePath(spec *regentv1.ObjectStoreSpec, rs *regentv1.ReplicaSet) string {
	if spec.Path != "" {
		return strings.Trim(spec.Path, "/")
	}
	return rs.Namespace + "/" + rs.Name
}

// storePlace is what instance reads from REGENT_OBJECT_STORE.
func storePlace(spec *regentv1.ObjectStoreSpec, path string) objectstore.Config {
	region := spec.Region
	if region == "" {
		region = "us-east-1"
	}
	return objectstore.Config{Endpoint: spec.Endpoint, Bucket: spec.Bucket, Path: path, Region: region}
}

// checkStoreSecrets reads the Secrets spec names and returns the
// credentials, or an error that says what is missing.
func (r *ReplicaSetReconciler) checkStoreSecrets(ctx context.Context, ns string, spec *regentv1.ObjectStoreSpec) (objectstore.Config, error) {
	var cfg objectstore.Config
	secret, err := r.readSecret(ctx, ns, spec.Credentials.SecretName)
	if err != nil {
		return cfg, err
	}
	if secret.Name == "" {
		return cfg, fmt.Errorf("the Secret %s/%s, named by credentials.secretName, does not exist", ns, spec.Credentials.SecretName)
	}
	for key, dst := range map[string]*string{accessKeyIDKey(spec): &cfg.AccessKeyID, secretAccessKeyKey(spec): &cfg.SecretAccessKey} {
		v := strings.TrimSpace(string(secret.Data[key]))
		if v == "" {
			return cfg, fmt.Errorf("the Secret %s/%s has no key %q (or it is empty)", ns, spec.Credentials.SecretName, key)
		}
		*dst = v
	}
	if ca := spec.CA; ca != nil {
		s, err := r.readSecret(ctx, ns, ca.Name)
		if err != nil {
			return cfg, err
		}
		if len(s.Data[ca.Key]) == 0 {
			return cfg, fmt.Errorf("the Secret %s/%s, named by ca, has no key %q", ns, ca.Name, ca.Key)
		}
		// A CA that instance could not read would stop it at every start.
		if !x509.NewCertPool().AppendCertsFromPEM(s.Data[ca.Key]) {
			return cfg, fmt.Errorf("the Secret %s/%s, named by ca, holds no PEM certificate under %q", ns, ca.Name, ca.Key)
		}
		cfg.CA = s.Data[ca.Key]
	}
	return cfg, nil
}

func accessKeyIDKey(spec *regentv1.ObjectStoreSpec) string {
	if k := spec.Credentials.AccessKeyIDKey; k != "" {
		return k
	}
	return "accessKeyId"
}

func secretAccessKeyKey(spec *regentv1.ObjectStoreSpec) string {
	if k := spec.Credentials.SecretAccessKeyKey; k != "" {
		return k
	}
	return "secretAccessKey"
}

// openStore opens spec's store (at path) with its Secret's credentials,
// for the operator's own reads.
func (r *ReplicaSetReconciler) openStore(ctx context.Context, ns string, spec *regentv1.ObjectStoreSpec, path string) (*objectstore.Store, error) {
	creds, err := r.checkStoreSecrets(ctx, ns, spec)
	if err != nil {
		return nil, err
	}
	cfg := storePlace(spec, path)
	cfg.AccessKeyID, cfg.SecretAccessKey, cfg.CA = creds.AccessKeyID, creds.SecretAccessKey, creds.CA
	return objectstore.Open(cfg)
}

// reconcileStoreMounts decides which stores the pods reach. A backup store
// whose Secret cannot be used is left out, so that the cluster runs
// without archiving (the Archiving condition and a Warning say why) rather
// than with pods that cannot mount their volume.
func (r *ReplicaSetReconciler) reconcileStoreMounts(ctx context.Context, rs *regentv1.ReplicaSet, obs *observation) storeMounts {
	var m storeMounts
	if rec := rs.Spec.Bootstrap.Recovery; rec != nil {
		m.recovery, m.recoveryPath = &rec.ObjectStore, storePath(&rec.ObjectStore, rs)
	}
	spec := rs.Spec.Backup.ObjectStore
	if spec == nil {
		return m
	}
	if _, err := r.checkStoreSecrets(ctx, rs.Namespace, spec); err != nil {
		obs.storeInvalid = err.Error()
		r.warnOnce(rs, client.ObjectKeyFromObject(rs), regentv1.EventObjectStoreInvalid, "ConfigureBackup", "spec.backup.objectStore: "+err.Error()+": the pods run without archiving", true)
		return m
	}
	m.archive, m.archivePath = spec, storePath(spec, rs)
	return m
}

// env are the variables the postgres container needs for the stores.
func (m storeMounts) env() []*corev1ac.EnvVarApplyConfiguration {
	var out []*corev1ac.EnvVarApplyConfiguration
	add := func(name string, v any) {
		b, _ := json.Marshal(v)
		out = append(out, corev1ac.EnvVar().WithName(name).WithValue(string(b)))
	}
	if m.archive != nil {
		add(names.EnvObjectStore, storePlace(m.archive, m.archivePath))
	}
	if m.recovery != nil {
		add(names.EnvRecoveryStore, storePlace(m.recovery, m.recoveryPath))
	}
	return out
}

// projections put each store's credentials in the secrets volume, under
// object-store/ and recovery-store/.
func (m storeMounts) projections() []*corev1ac.VolumeProjectionApplyConfiguration {
	var out []*corev1ac.VolumeProjectionApplyConfiguration
	add := func(spec *regentv1.ObjectStoreSpec, dir string) {
		out = append(out, corev1ac.VolumeProjection().WithSecret(corev1ac.SecretProjection().
			WithName(spec.Credentials.SecretName).
			WithItems(
				corev1ac.KeyToPath().WithKey(accessKeyIDKey(spec)).WithPath(dir+"/"+names.ObjectStoreAccessKeyID),
				corev1ac.KeyToPath().WithKey(secretAccessKeyKey(spec)).WithPath(dir+"/"+names.ObjectStoreSecretKey))))
		if spec.CA != nil {
			out = append(out, corev1ac.VolumeProjection().WithSecret(corev1ac.SecretProjection().
				WithName(spec.CA.Name).
				WithItems(corev1ac.KeyToPath().WithKey(spec.CA.Key).WithPath(dir+"/"+names.ObjectStoreCA))))
		}
	}
	if m.archive != nil {
		add(m.archive, "object-store")
	}
	if m.recovery != nil {
		add(m.recovery, "recovery-store")
	}
	return out
}

// recoveryRequest is what the agent reads from REGENT_RECOVERY: the
// backup and target of spec.bootstrap.recovery.
func recoveryRequest(rec *regentv1.RecoverySpec) instance.RestoreRequest {
	req := instance.RestoreRequest{BackupID: rec.BackupID}
	switch {
	case rec.TargetTime != nil:
		req.Target.Time = rec.TargetTime.UTC().Format(time.RFC3339Nano)
	case rec.TargetLSN != "":
		req.Target.LSN = rec.TargetLSN
	case rec.TargetName != "":
		req.Target.Name = rec.TargetName
	}
	return req
}

// agentEnv is the variable the agent needs for a restore.
func (m storeMounts) agentEnv(rs *regentv1.ReplicaSet) []*corev1ac.EnvVarApplyConfiguration {
	rec := rs.Spec.Bootstrap.Recovery
	if rec == nil {
		return nil
	}
	b, _ := json.Marshal(recoveryRequest(rec))
	return []*corev1ac.EnvVarApplyConfiguration{corev1ac.EnvVar().WithName(names.EnvRecovery).WithValue(string(b))}
}
