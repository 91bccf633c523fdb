// Command devenv runs the test control plane (etcd, kube-apiserver with
// Regent's CRD, kube-controller-manager) until interrupted and writes an
// admin kubeconfig, so that a person can try the API with kubectl:
//
//	KUBEBUILDER_ASSETS=bin go run ./hack/devenv -write-kubeconfig /tmp/regent.kubeconfig
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/regent-dev/regent/internal/testenv"
)

func main() {
	kubeconfig := flag.String("write-kubeconfig", "regent-devenv.kubeconfig", "where to write the admin kubeconfig")
	flag.Parse()
	if err := run(*kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "devenv:", err)
		os.Exit(1)
	}
}

func run(kubeconfig string) error {
	env, err := testenv.Start(testenv.CRDDir())
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()

	cfg := env.Config
	kc := clientcmdapi.NewConfig()
	kc.Clusters["devenv"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
	kc.Contexts["devenv"] = &clientcmdapi.Context{Cluster: "devenv", AuthInfo: "admin"}
	kc.CurrentContext = "devenv"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return err
	}
	fmt.Printf("Control plane up at %s\nexport KUBECONFIG=%s\nInterrupt to stop.\n", cfg.Host, kubeconfig)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	return nil
}
