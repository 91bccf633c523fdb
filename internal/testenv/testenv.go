// Package testenv runs a real control plane for tests: etcd and
// kube-apiserver through controller-runtime's envtest, plus
// kube-controller-manager, so that garbage collection, the StatefulSet
// controller (pods and claims from templates) and the EndpointSlice
// controller behave as on a real cluster. The binaries come from
// KUBEBUILDER_ASSETS, which `make test` points at bin/ after building them
// from pinned Go modules (hack/build-tools.sh).
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// NodeName is a Node that Start registers, for tests that bind pods to a node
// (the EndpointSlice controller skips pods whose node it cannot find).
const NodeName = "testenv-node"

// Env is a running control plane.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config

	envtest *envtest.Environment
	kcm     *exec.Cmd
	kcmLog  string
	dir     string
}

// Assets returns the directory holding the control plane binaries, or an
// error that says how to get them.
func Assets() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		// `go test` run by hand from a package directory: use the
		// repository's bin/ when it has the binaries.
		dir = filepath.Join(repoRoot(), "bin")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run the tests with `make test`, which builds it (hack/build-tools.sh)", b, dir)
		}
	}
	return dir, nil
}

// repoRoot is the repository root, found from this source file.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// CRDDir is the directory of the generated CRDs.
func CRDDir() string { return filepath.Join(repoRoot(), "config", "crd", "bases") }

// Start starts etcd, kube-apiserver (with the CRDs of crdDirs installed)
// and kube-controller-manager.
func Start(crdDirs ...string) (_ *Env, err error) {
	assets, err := Assets()
	if err != nil {
		return nil, err
	}
	e := &Env{envtest: &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     crdDirs,
		ErrorIfCRDPathMissing: true,
	}}
	if e.Config, err = e.envtest.Start(); err != nil {
		return nil, fmt.Errorf("start etcd and kube-apiserver: %w", err)
	}
	defer func() {
		if err != nil {
			_ = e.Stop()
		}
	}()
	if e.dir, err = os.MkdirTemp("", "regent-testenv-"); err != nil {
		return nil, err
	}
	if err := e.startControllerManager(filepath.Join(assets, "kube-controller-manager")); err != nil {
		return nil, err
	}
	c, err := client.New(e.Config, client.Options{})
	if err != nil {
		return nil, err
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName, Labels: map[string]string{
		corev1.LabelHostname: NodeName, corev1.LabelTopologyZone: "zone-a",
	}}}
	if err := c.Create(context.Background(), node); err != nil {
		return nil, fmt.Errorf("register node: %w", err)
	}
	return e, nil
}

func (e *Env) startControllerManager(binary string) error {
	user, err := e.envtest.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return fmt.Errorf("add controller manager user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return err
	}
	kubeconfigPath := filepath.Join(e.dir, "kcm.kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return err
	}
	e.kcmLog = filepath.Join(e.dir, "kube-controller-manager.log")
	logFile, err := os.Create(e.kcmLog)
	if err != nil {
		return err
	}
	defer logFile.Close()
	e.kcm = exec.Command(binary,
		"--kubeconfig="+kubeconfigPath,
		"--leader-elect=false",
		// No HTTPS endpoint: nothing scrapes it, and it would need ports.
		"--secure-port=0",
		"--use-service-account-credentials=false",
		// No kubelet ever reports here: the node lifecycle controllers
		// would mark every test pod not ready, then evict it.
		"--controllers=*,-node-lifecycle-controller,-taint-eviction-controller,-device-taint-eviction-controller",
		// Tests wait on the controllers; make them quick.
		"--concurrent-statefulset-syncs=5",
		"--concurrent-gc-syncs=20",
		"-v=1",
	)
	e.kcm.Stdout, e.kcm.Stderr = logFile, logFile
	// Its own process group, so that a test binary killed by a timeout
	// does not take the terminal's signals to it and it can be killed whole.
	e.kcm.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := e.kcm.Start(); err != nil {
		return fmt.Errorf("start kube-controller-manager: %w", err)
	}
	// The service account controller makes a "default" ServiceAccount in
	// every namespace: once it exists, the controllers run.
	c, err := client.New(e.Config, client.Options{})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "default"}, &corev1.ServiceAccount{})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kube-controller-manager did not start within 60s:\n%s", e.ControllerManagerLogTail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ControllerManagerLogTail returns the last n lines of
// kube-controller-manager's log, for failure messages.
func (e *Env) ControllerManagerLogTail(n int) string {
	b, err := os.ReadFile(e.kcmLog)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// Stop stops every process Start started.
func (e *Env) Stop() error {
	var errs []error
	if e.kcm != nil && e.kcm.Process != nil {
		_ = syscall.Kill(-e.kcm.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = e.kcm.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-e.kcm.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}
	if err := e.envtest.Stop(); err != nil {
		errs = append(errs, err)
	}
	if e.dir != "" && os.Getenv("REGENT_KEEP_TESTENV") == "" {
		errs = append(errs, os.RemoveAll(e.dir))
	}
	return errors.Join(errs...)
}
