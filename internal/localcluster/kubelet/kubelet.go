// Package kubelet is the local cluster's node agent: it registers a Node,
// keeps its heartbeat (status and Lease), and runs the pods the scheduler
// binds to it as local processes, each container in its own mount namespace
// and cgroup, with the volumes, environment, probes, restarts, status and
// graceful deletion of a real kubelet. It is a tool for development and
// tests on one machine, not a kubelet for production.
package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/go-logr/logr"

	"github.com/regent-dev/regent/internal/localcluster/cgroup"
	"github.com/regent-dev/regent/internal/localcluster/runtime"
)

// Heartbeat timings, as a real kubelet's defaults.
const (
	leaseDuration   = 40 * time.Second
	heartbeatPeriod = 10 * time.Second
)

// Config configures one node.
type Config struct {
	Node, Zone string
	// Cluster names the cluster (its network namespace), for cgroup paths.
	Cluster string
	// StateDir holds the node's pods: volumes, logs, container roots.
	StateDir string
	// PodIPPrefix is the first three octets of this node's pod addresses.
	PodIPPrefix string
	// APIServerHost and APIServerPort are what pods get as
	// KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT.
	APIServerHost, APIServerPort string
	// Launcher is the binary whose run-container subcommand starts a
	// container (the localcluster binary itself).
	Launcher string
	Images   *runtime.ImageMap
	// Serving is the node's API, for kubectl logs.
	Serving ServingConfig
}

// Kubelet runs one node.
type Kubelet struct {
	cfg    Config
	client kubernetes.Interface
	log    logr.Logger

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	ips     map[string]types.UID
}

// New returns a kubelet for cfg.
func New(cfg Config, client kubernetes.Interface, log logr.Logger) *Kubelet {
	return &Kubelet{cfg: cfg, client: client, log: log,
		workers: map[types.UID]*podWorker{}, ips: map[string]types.UID{}}
}

// HeartbeatPausedFile exists while a node's heartbeat is stopped (a fault
// for tests: the node then looks lost to the control plane).
func HeartbeatPausedFile(stateDir string) string { return filepath.Join(stateDir, "heartbeat-paused") }

// Run registers the node and serves it until ctx ends. Pods of a previous
// run of this node are killed first: their processes cannot be adopted.
func (k *Kubelet) Run(ctx context.Context) error {
	if err := os.MkdirAll(k.cfg.StateDir, 0o755); err != nil {
		return err
	}
	if err := cgroup.For(k.cfg.Cluster, k.cfg.Node).Remove(10 * time.Second); err != nil {
		return fmt.Errorf("clean up a previous run: %w", err)
	}
	if err := k.register(ctx); err != nil {
		return fmt.Errorf("register node %s: %w", k.cfg.Node, err)
	}
	go k.heartbeat(ctx)
	go func() {
		if err := k.serve(ctx); err != nil {
			k.log.Error(err, "The node's API stopped: kubectl logs will not reach this node")
		}
	}()

	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.cfg.Node).String()
		}))
	podInformer := factory.Core().V1().Pods().Informer()
	_, err := podInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.sync(ctx, obj.(*corev1.Pod)) },
		UpdateFunc: func(_, obj any) { k.sync(ctx, obj.(*corev1.Pod)) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				k.forget(pod.UID)
			}
		},
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	// A stopped kubelet stops its pods: nothing of this node outlives it.
	k.mu.Lock()
	workers := make([]*podWorker, 0, len(k.workers))
	for _, w := range k.workers {
		workers = append(workers, w)
	}
	k.mu.Unlock()
	for _, w := range workers {
		w.kill()
	}
	return cgroup.For(k.cfg.Cluster, k.cfg.Node).Remove(10 * time.Second)
}

// sync starts a worker for a new pod, or tells an existing worker that its
// pod changed (a deletion request, most importantly).
func (k *Kubelet) sync(ctx context.Context, pod *corev1.Pod) {
	k.mu.Lock()
	w, ok := k.workers[pod.UID]
	if !ok {
		if pod.DeletionTimestamp != nil {
			k.mu.Unlock()
			// Never started here (or started by a previous run): nothing
			// runs, so the object can go at once.
			k.finishDeletion(ctx, pod)
			return
		}
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			k.mu.Unlock()
			return
		}
		w = newPodWorker(k, pod)
		k.workers[pod.UID] = w
		k.mu.Unlock()
		go w.run(ctx)
		return
	}
	k.mu.Unlock()
	w.update(pod)
}

// forget stops a pod whose object is gone.
func (k *Kubelet) forget(uid types.UID) {
	k.mu.Lock()
	w := k.workers[uid]
	k.mu.Unlock()
	if w != nil {
		w.kill()
	}
}

func (k *Kubelet) removeWorker(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.workers, uid)
	for ip, owner := range k.ips {
		if owner == uid {
			delete(k.ips, ip)
		}
	}
}

// allocateIP gives the pod the lowest free address of the node's range.
func (k *Kubelet) allocateIP(uid types.UID) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for ip, owner := range k.ips {
		if owner == uid {
			return ip, nil
		}
	}
	for i := 1; i < 255; i++ {
		ip := fmt.Sprintf("%s.%d", k.cfg.PodIPPrefix, i)
		if _, used := k.ips[ip]; !used {
			k.ips[ip] = uid
			return ip, nil
		}
	}
	return "", errors.New("no free pod address on this node")
}

// finishDeletion removes the pod object once nothing of it runs.
func (k *Kubelet) finishDeletion(ctx context.Context, pod *corev1.Pod) {
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To[int64](0),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.log.Error(err, "Delete pod", "pod", pod.Namespace+"/"+pod.Name)
	}
}

func (k *Kubelet) hostIP() string { return k.cfg.PodIPPrefix + ".254" }

func (k *Kubelet) register(ctx context.Context) error {
	labels := map[string]string{
		corev1.LabelHostname:       k.cfg.Node,
		corev1.LabelTopologyZone:   k.cfg.Zone,
		corev1.LabelTopologyRegion: "local",
		corev1.LabelOSStable:       "linux",
		corev1.LabelArchStable:     "amd64",
	}
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.Node, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.cfg.Node, Labels: labels}}
		if _, err := k.client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		for l, v := range labels {
			node.Labels[l] = v
		}
		if _, err := k.client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	return k.postStatus(ctx)
}

// heartbeat renews the node Lease and posts the Ready condition, unless a
// test paused it.
func (k *Kubelet) heartbeat(ctx context.Context) {
	t := time.NewTicker(heartbeatPeriod)
	defer t.Stop()
	beat := func() {
		if _, err := os.Stat(HeartbeatPausedFile(k.cfg.StateDir)); err == nil {
			return
		}
		if err := k.renewLease(ctx); err != nil && ctx.Err() == nil {
			k.log.Error(err, "Renew node lease")
		}
		if err := k.postStatus(ctx); err != nil && ctx.Err() == nil {
			k.log.Error(err, "Post node status")
		}
	}
	beat()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			beat()
		}
	}
}

func (k *Kubelet) renewLease(ctx context.Context) error {
	leases := k.client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, k.cfg.Node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.cfg.Node, Namespace: corev1.NamespaceNodeLease},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(k.cfg.Node),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration.Seconds())),
				RenewTime:            &now,
			},
		}
		_, err = leases.Create(ctx, lease, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	return err
}

func (k *Kubelet) postStatus(ctx context.Context) error {
	node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.Node, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("16Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	node.Status.Capacity = capacity
	node.Status.Allocatable = capacity
	node.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: k.hostIP()},
		{Type: corev1.NodeHostName, Address: k.cfg.Node},
	}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(k.cfg.Serving.Port)
	node.Status.NodeInfo = corev1.NodeSystemInfo{
		KubeletVersion: "v1.37.2-regent-local", OperatingSystem: "linux", Architecture: "amd64",
		ContainerRuntimeVersion: "regent-local://processes",
	}
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg,
			LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range node.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	node.Status.Conditions = []corev1.NodeCondition{
		cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "local process kubelet is posting ready status"),
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", ""),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", ""),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", ""),
	}
	_, err = k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}
