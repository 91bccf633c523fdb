package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/regent-dev/regent/internal/names"
	"github.com/regent-dev/regent/replica/instance"
	"github.com/regent-dev/regent/replica/objectstore"
	"github.com/regent-dev/regent/replica/walarchive"
)

type instanceOptions struct {
	pgdata, runDir, podIP, podName, parameters, passwordFile, binDir, runAs, storageSize string
	sharedNetwork                                                                        bool
	objectStore, objectStoreSecrets, cluster                                             string
	recoveryStore, recoveryStoreSecrets, clusterUID                                      string
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func newInstanceCommand() *cobra.Command {
	o := &instanceOptions{}
	c := &cobra.Command{
		Use:   "instance",
		Short: "Run as PID 1 of the PostgreSQL container: supervise PostgreSQL for the agent",
		Long: "instance is the only process that touches PGDATA. It takes orders from the agent\n" +
			"over a unix socket in the run directory and stops a leader whose watchdog\n" +
			"deadline passed. SIGTERM stops PostgreSQL cleanly, SIGQUIT at once.",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, err := o.config()
			if err != nil {
				return ExitError{Code: 2, Err: err}
			}
			return runInstance(cfg, o.runDir)
		},
	}
	f := c.Flags()
	f.StringVar(&o.pgdata, "pgdata", envOr("PGDATA", names.PGData), "data directory ($PGDATA)")
	f.StringVar(&o.runDir, "run-dir", envOr("REGENT_RUN_DIR", names.SocketDir), "directory of the sockets ($REGENT_RUN_DIR)")
	f.StringVar(&o.podIP, "pod-ip", os.Getenv("POD_IP"), "the address PostgreSQL listens on for the cluster ($POD_IP)")
	f.BoolVar(&o.sharedNetwork, "shared-pod-network", os.Getenv(names.EnvSharedPodNetwork) == "true",
		"pods share one network namespace: listen on the pod IP only, not also on 127.0.0.1 (kubectl port-forward) ($"+names.EnvSharedPodNetwork+")")
	f.StringVar(&o.podName, "pod-name", os.Getenv("POD_NAME"), "the pod's name ($POD_NAME)")
	f.StringVar(&o.parameters, "parameters", os.Getenv(names.EnvPGParameters), "PostgreSQL settings as a JSON object ($"+names.EnvPGParameters+")")
	f.StringVar(&o.storageSize, "storage-size", os.Getenv(names.EnvStorageSize),
		"the data volume's size, a quantity such as 10Gi ($"+names.EnvStorageSize+"): the WAL is sized from it; empty: PostgreSQL's defaults")
	f.StringVar(&o.passwordFile, "superuser-password-file", names.SecretsMountPath+"/superuser-password", "the postgres role's password")
	f.StringVar(&o.binDir, "pg-bindir", "", "directory of PostgreSQL's programs (default: where postgres is on PATH)")
	f.StringVar(&o.objectStore, "object-store", os.Getenv(names.EnvObjectStore),
		"the object store to ship WAL to, as JSON {endpoint, bucket, path, region} ($"+names.EnvObjectStore+"); empty: none")
	f.StringVar(&o.objectStoreSecrets, "object-store-secrets", names.ObjectStoreSecretsPath,
		"directory of the object store's "+names.ObjectStoreAccessKeyID+", "+names.ObjectStoreSecretKey+" and optional "+names.ObjectStoreCA)
	f.StringVar(&o.recoveryStore, "recovery-store", os.Getenv(names.EnvRecoveryStore),
		"the object store a new cluster is restored from, as JSON like --object-store ($"+names.EnvRecoveryStore+")")
	f.StringVar(&o.recoveryStoreSecrets, "recovery-store-secrets", names.RecoveryStoreSecretsPath,
		"directory of the recovery store's credentials, as --object-store-secrets")
	f.StringVar(&o.cluster, "cluster", clusterFromEnv(), "<namespace>/<name> of the ReplicaSet, recorded in the object store")
	f.StringVar(&o.clusterUID, "cluster-uid", os.Getenv(names.EnvClusterUID), "the ReplicaSet's UID, recorded in the object store ($"+names.EnvClusterUID+")")
	f.StringVar(&o.runAs, "run-as-user", "", "run PostgreSQL as this user (for development as root; pods run as their own user)")
	_ = f.MarkHidden("run-as-user")
	return c
}

var versionRE = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

func (o *instanceOptions) config() (instance.Config, error) {
	var errs []error
	if net.ParseIP(o.podIP) == nil {
		errs = append(errs, fmt.Errorf("--pod-ip %q is not an IP address (set POD_IP from status.podIP)", o.podIP))
	}
	if o.podName == "" {
		errs = append(errs, errors.New("--pod-name is empty (set POD_NAME from metadata.name)"))
	}
	params := map[string]string{}
	if o.parameters != "" {
		if err := json.Unmarshal([]byte(o.parameters), &params); err != nil {
			errs = append(errs, fmt.Errorf("--parameters: %w", err))
		}
	}
	var budget instance.StorageBudget
	if o.storageSize != "" {
		q, err := resource.ParseQuantity(o.storageSize)
		if err != nil || q.Sign() <= 0 {
			errs = append(errs, fmt.Errorf("--storage-size %q is not a positive quantity such as 10Gi", o.storageSize))
		} else {
			budget.Volume = volumeBytes(q.Value(), filepath.Dir(filepath.Clean(o.pgdata)))
		}
	}
	if _, err := os.Stat(o.passwordFile); err != nil {
		errs = append(errs, fmt.Errorf("superuser password: %w", err))
	}
	bin := o.binDir
	if bin == "" {
		p, err := exec.LookPath("postgres")
		if err != nil {
			errs = append(errs, errors.New("postgres is not on PATH: is this a PostgreSQL image? (or set --pg-bindir)"))
		}
		bin = filepath.Dir(p)
	}
	major := ""
	if out, err := exec.Command(filepath.Join(bin, "postgres"), "--version").Output(); err == nil {
		if m := versionRE.FindSubmatch(out); m != nil {
			major = string(m[1])
		}
	}
	if major == "" && bin != "." {
		errs = append(errs, fmt.Errorf("cannot tell the PostgreSQL version of %s/postgres", bin))
	}
	var cred *syscall.Credential
	if o.runAs != "" {
		u, err := user.Lookup(o.runAs)
		if err != nil {
			errs = append(errs, fmt.Errorf("--run-as-user: %w", err))
		} else {
			uid, _ := strconv.Atoi(u.Uid)
			gid, _ := strconv.Atoi(u.Gid)
			cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)} //nolint:gosec // G115: ids come from the passwd lookup above
		}
	}
	store, err := openObjectStore(o.objectStore, o.objectStoreSecrets)
	if err != nil {
		errs = append(errs, err)
	}
	source, err := openObjectStore(o.recoveryStore, o.recoveryStoreSecrets)
	if err != nil {
		errs = append(errs, fmt.Errorf("recovery store: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return instance.Config{}, err
	}
	ship := ""
	if store != nil {
		ship = " --ship"
		if _, set := params["archive_timeout"]; !set {
			// A quiet leader's last writes reach the store within a
			// minute (the RPO of an idle cluster); spec.postgres.parameters
			// may say otherwise.
			params["archive_timeout"] = "60s"
		}
	}
	// PostgreSQL runs this same binary to archive and restore WAL.
	self, err := os.Executable()
	if err != nil {
		return instance.Config{}, fmt.Errorf("cannot find the regent binary for archive_command: %w", err)
	}
	archive := filepath.Join(filepath.Dir(filepath.Clean(o.pgdata)), names.WALArchiveDirName)
	return instance.Config{
		PGData: o.pgdata, BinDir: bin, Major: major, SuperuserPasswordFile: o.passwordFile, Credential: cred,
		ArchiveDir: archive, Store: store, Cluster: o.cluster, ClusterUID: o.clusterUID, Source: source,
		SourceRestoreCommand: fmt.Sprintf("%s wal-restore --object-store=%s --object-store-secrets=%s %%f %%p",
			shellQuote(self), shellQuote(o.recoveryStore), shellQuote(o.recoveryStoreSecrets)),
		Settings: instance.Settings{PodIP: o.podIP, Loopback: !o.sharedNetwork, SocketDir: o.runDir, ClusterName: o.podName, Parameters: params,
			Budget: budget,
			ArchiveCommand: fmt.Sprintf("%s wal-push --archive-dir=%s --keep=%d%s %%p", shellQuote(self), shellQuote(archive),
				budget.ArchiveSegments(walarchive.DefaultKeep), ship),
			RestoreCommand: fmt.Sprintf("%s wal-fetch --run-dir=%s %%f %%p", shellQuote(self), shellQuote(o.runDir)),
		},
	}, nil
}

func clusterFromEnv() string {
	if ns, name := os.Getenv("POD_NAMESPACE"), os.Getenv("REGENT_CLUSTER"); ns != "" && name != "" {
		return ns + "/" + name
	}
	return ""
}

// openObjectStore reads the store's place (JSON) and its credentials'
// files; an empty place means no store.
func openObjectStore(place, secrets string) (*objectstore.Store, error) {
	if place == "" {
		return nil, nil
	}
	var cfg objectstore.Config
	if err := json.Unmarshal([]byte(place), &cfg); err != nil {
		return nil, fmt.Errorf("--object-store: %w", err)
	}
	read := func(name string, optional bool) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(secrets, name))
		if optional && errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("object store credentials: %w", err)
		}
		return b, nil
	}
	id, err := read(names.ObjectStoreAccessKeyID, false)
	if err != nil {
		return nil, err
	}
	secret, err := read(names.ObjectStoreSecretKey, false)
	if err != nil {
		return nil, err
	}
	ca, err := read(names.ObjectStoreCA, true)
	if err != nil {
		return nil, err
	}
	cfg.AccessKeyID, cfg.SecretAccessKey, cfg.CA = strings.TrimSpace(string(id)), strings.TrimSpace(string(secret)), ca
	return objectstore.Open(cfg)
}

// shellQuote quotes s for /bin/sh, which runs archive and restore commands.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func runInstance(cfg instance.Config, runDir string) error {
	cfg.Log = newLogger().WithName("instance")
	in := instance.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT)
	go func() {
		sig := <-sigs
		cfg.Log.Info("Signal received; stopping PostgreSQL", "signal", sig.String())
		if sig == syscall.SIGQUIT {
			_, _ = in.Stop(context.Background(), instance.StopImmediate)
		}
		cancel()
	}()
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	// Without its API, instance is useless: a failed listener ends it.
	errc := make(chan error, 1)
	go func() {
		err := in.Serve(ctx, runDir)
		errc <- err
		cancel()
	}()
	cfg.Log.Info("Serving the agent", "socket", filepath.Join(runDir, instance.SocketName), "pgdata", cfg.PGData,
		"postgres", cfg.Major)
	in.Run(ctx)
	if err := <-errc; err != nil {
		return fmt.Errorf("instance API: %w", err)
	}
	return nil
}

// volumeBytes is the smaller of the claimed size and the filesystem's
// under dir: a volume provisioner that does not enforce sizes must not
// make the budget larger than asked, and one that rounds down must not
// make it larger than there is.
func volumeBytes(claimed int64, dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Blocks == 0 {
		return claimed
	}
	return min(claimed, int64(st.Blocks)*st.Bsize) //nolint:gosec // G115: block counts fit an int64
}
