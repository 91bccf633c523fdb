package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/regent-dev/regent/internal/localcluster/cgroup"
	"github.com/regent-dev/regent/internal/localcluster/runtime"
)

// podWorker runs one pod from start to deletion.
type podWorker struct {
	k   *Kubelet
	dir string

	mu         sync.Mutex
	pod        *corev1.Pod // latest object seen
	ip         string
	started    metav1.Time
	initDone   bool
	containers map[string]*containerState // by container name, init containers too
	terminate  chan int64                 // grace period in seconds
	killed     chan struct{}
	killOnce   sync.Once
	dirty      chan struct{}
	volumeMsg  string
	done       chan struct{}
	// volumesPrepared: the pod's volumes were set up once, before its
	// first container; later passes only refresh their contents.
	volumesPrepared bool
}

// containerState is what the kubelet knows of one container.
type containerState struct {
	spec         corev1.Container
	init         bool
	image        runtime.Image
	cmd          *exec.Cmd
	pid          int
	state        corev1.ContainerState
	lastState    corev1.ContainerState
	restartCount int32
	// backoff is the crash-loop back-off a next crash would wait, set
	// at backoffUpdated (zero before the first crash).
	backoff        time.Duration
	backoffUpdated time.Time
	ready          bool
	started        bool
	// exited is closed when the current process ends.
	exited chan struct{}
	// stopProbes ends the current process's probes.
	stopProbes context.CancelFunc
}

func newPodWorker(k *Kubelet, pod *corev1.Pod) *podWorker {
	return &podWorker{
		k: k, pod: pod.DeepCopy(),
		dir:        filepath.Join(k.cfg.StateDir, "pods", string(pod.UID)),
		containers: map[string]*containerState{},
		terminate:  make(chan int64, 1),
		killed:     make(chan struct{}),
		dirty:      make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
}

func (w *podWorker) key() string { return w.pod.Namespace + "/" + w.pod.Name }

func (w *podWorker) podCgroup() cgroup.Group {
	return cgroup.For(w.k.cfg.Cluster, w.k.cfg.Node, string(w.pod.UID))
}

// update records a newer pod object; a deletion request starts termination.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	w.pod = pod.DeepCopy()
	w.mu.Unlock()
	if pod.DeletionTimestamp != nil {
		grace := int64(30)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = *pod.DeletionGracePeriodSeconds
		}
		select {
		case w.terminate <- grace:
		default:
		}
	}
}

// kill stops everything at once (the pod object is gone, or the kubelet
// stops) and waits for the worker to finish.
func (w *podWorker) kill() {
	w.killOnce.Do(func() { close(w.killed) })
	<-w.done
}

func (w *podWorker) markDirty() {
	select {
	case w.dirty <- struct{}{}:
	default:
	}
}

func (w *podWorker) run(ctx context.Context) {
	defer close(w.done)
	defer w.k.removeWorker(w.pod.UID)
	log := w.k.log.WithValues("pod", w.key())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	go w.statusLoop(ctx)

	var err error
	if w.ip, err = w.k.allocateIP(w.pod.UID); err != nil {
		log.Error(err, "Allocate pod IP")
		return
	}
	w.mu.Lock()
	w.started = metav1.Now()
	for i, c := range w.pod.Spec.InitContainers {
		w.containers[c.Name] = &containerState{spec: w.pod.Spec.InitContainers[i], init: true,
			state: waiting("PodInitializing", "")}
	}
	for i, c := range w.pod.Spec.Containers {
		w.containers[c.Name] = &containerState{spec: w.pod.Spec.Containers[i],
			state: waiting("ContainerCreating", "")}
	}
	w.mu.Unlock()
	w.markDirty()
	log.Info("Starting pod", "ip", w.ip)

	stop := make(chan struct{})
	var stopOnce sync.Once
	lifecycleDone := make(chan struct{})
	go func() {
		defer close(lifecycleDone)
		w.lifecycle(ctx, stop)
	}()

	var grace int64 = -1
	select {
	case grace = <-w.terminate:
	case <-w.killed:
		grace = 0
	case <-lifecycleDone:
	}
	stopOnce.Do(func() { close(stop) })
	w.stopAll(grace)
	<-lifecycleDone
	cancel()
	if err := w.podCgroup().Remove(10 * time.Second); err != nil {
		log.Error(err, "Remove pod cgroup")
	}
	w.cleanup()
	select {
	case <-w.killed:
		return
	default:
	}
	w.mu.Lock()
	deleting := w.pod.DeletionTimestamp != nil
	pod := w.pod.DeepCopy()
	w.mu.Unlock()
	if deleting {
		log.Info("Pod stopped; removing the object")
		w.k.finishDeletion(context.Background(), pod)
	} else {
		// Ran to completion (restartPolicy Never or OnFailure): keep the
		// final status.
		_ = w.pushStatus(context.Background())
	}
}

// lifecycle prepares volumes, runs init containers in order, then the
// containers, restarting them as the restart policy says, until stop.
func (w *podWorker) lifecycle(ctx context.Context, stop <-chan struct{}) {
	log := w.k.log.WithValues("pod", w.key())
	if err := w.podCgroup().Create(); err != nil {
		log.Error(err, "Create pod cgroup")
		return
	}
	for {
		err := w.prepareVolumes(ctx)
		if err == nil {
			break
		}
		w.mu.Lock()
		w.volumeMsg = err.Error()
		w.mu.Unlock()
		w.markDirty()
		select {
		case <-stop:
			return
		case <-time.After(2 * time.Second):
		}
	}
	w.mu.Lock()
	w.volumeMsg = ""
	policy := w.pod.Spec.RestartPolicy
	w.mu.Unlock()
	w.volumesPrepared = true
	go w.refreshVolumes(ctx, stop)

	for _, c := range w.pod.Spec.InitContainers {
		cs := w.containers[c.Name]
		for {
			code, ok := w.runOnce(ctx, cs, stop)
			if !ok {
				return
			}
			if code == 0 {
				break
			}
			if policy == corev1.RestartPolicyNever {
				return
			}
			if !w.backoff(cs, stop) {
				return
			}
		}
	}
	w.mu.Lock()
	w.initDone = true
	w.mu.Unlock()
	w.markDirty()

	var wg sync.WaitGroup
	for _, c := range w.pod.Spec.Containers {
		cs := w.containers[c.Name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				code, ok := w.runOnce(ctx, cs, stop)
				if !ok {
					return
				}
				if policy == corev1.RestartPolicyNever || (policy == corev1.RestartPolicyOnFailure && code == 0) {
					return
				}
				if !w.backoff(cs, stop) {
					return
				}
			}
		}()
	}
	wg.Wait()
}

// refreshVolumes rewrites the pod's Secret, ConfigMap, downward API and
// projected volumes every minute, as a kubelet does: changes reach running
// pods, and service account tokens are renewed long before they expire.
func (w *podWorker) refreshVolumes(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := w.prepareVolumes(ctx); err != nil && ctx.Err() == nil {
			w.k.log.Info("Refreshing volumes failed; keeping the old contents", "pod", w.key(), "error", err.Error())
		}
	}
}

// The crash-loop back-off, computed as a real kubelet computes it
// (flowcontrol.Backoff keyed by container): a container that exits with
// no recent crash restarts at once; one that exits again within
// 2×crashLoopMax of the last waits the current back-off, which then
// doubles. The local cluster's bounds are short (a real kubelet's are
// 10 s and 5 min, and its maxContainerRestartPeriod can lower the cap)
// so that tests of repeated crashes stay short.
const (
	crashLoopInitial = time.Second
	crashLoopMax     = 20 * time.Second
)

// backoff waits before a restart as the crash-loop back-off says, shown
// as CrashLoopBackOff while it waits. It returns false when the pod stops
// meanwhile.
func (w *podWorker) backoff(cs *containerState, stop <-chan struct{}) bool {
	w.mu.Lock()
	finished := time.Now()
	if t := cs.lastState.Terminated; t != nil {
		finished = t.FinishedAt.Time
	}
	var delay time.Duration
	if cs.backoff == 0 || finished.Sub(cs.backoffUpdated) > 2*crashLoopMax {
		cs.backoff = crashLoopInitial
	} else {
		delay = cs.backoff - time.Since(finished)
		cs.backoff = min(2*cs.backoff, crashLoopMax)
	}
	cs.backoffUpdated = finished
	if delay <= 0 {
		w.mu.Unlock()
		return true
	}
	cs.state = waiting("CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container %s", delay.Round(time.Second), cs.spec.Name))
	w.mu.Unlock()
	w.markDirty()
	select {
	case <-stop:
		return false
	case <-time.After(delay):
		return true
	}
}

// runOnce starts the container and waits for its process to end. It
// returns the exit code, and false when the pod is stopping (or the image
// cannot run).
func (w *podWorker) runOnce(ctx context.Context, cs *containerState, stop <-chan struct{}) (int, bool) {
	log := w.k.log.WithValues("pod", w.key(), "container", cs.spec.Name)
	select {
	case <-stop:
		return 0, false
	default:
	}
	img, err := w.k.cfg.Images.Resolve(cs.spec.Image)
	if err != nil {
		var pull *runtime.ErrImagePull
		reason := "CreateContainerError"
		if errors.As(err, &pull) {
			reason = "ErrImagePull"
		}
		w.mu.Lock()
		cs.state = waiting(reason, err.Error())
		w.mu.Unlock()
		w.markDirty()
		log.Info("Cannot run container", "reason", reason, "message", err.Error())
		<-stop
		return 0, false
	}
	cs.image = img
	cmd, err := w.startContainer(cs)
	if err != nil {
		w.mu.Lock()
		cs.state = waiting("CreateContainerError", err.Error())
		w.mu.Unlock()
		w.markDirty()
		log.Error(err, "Start container")
		select {
		case <-stop:
			return 0, false
		case <-time.After(2 * time.Second):
			return 1, true
		}
	}
	probeCtx, stopProbes := context.WithCancel(ctx)
	exited := make(chan struct{})
	w.mu.Lock()
	cs.cmd, cs.pid, cs.exited, cs.stopProbes = cmd, cmd.Process.Pid, exited, stopProbes
	cs.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
	cs.ready, cs.started = false, false
	if !cs.init && cs.spec.StartupProbe == nil {
		cs.started = true
	}
	w.mu.Unlock()
	w.markDirty()
	log.Info("Started container", "pid", cmd.Process.Pid)
	if !cs.init {
		w.startProbes(probeCtx, cs)
	}

	waitErr := cmd.Wait()
	stopProbes()
	code := 0
	if waitErr != nil {
		var exit *exec.ExitError
		if errors.As(waitErr, &exit) {
			code = exit.ExitCode()
			if st, ok := exit.Sys().(syscall.WaitStatus); ok && st.Signaled() {
				code = 128 + int(st.Signal())
			}
		} else {
			code = 1
		}
	}
	// The main process is gone: so is the rest of the container.
	_ = w.containerCgroup(cs).Kill()
	close(exited)
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	w.mu.Lock()
	startedAt := metav1.Now()
	if cs.state.Running != nil {
		startedAt = cs.state.Running.StartedAt
	}
	cs.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: int32(code), Reason: reason, StartedAt: startedAt, FinishedAt: metav1.Now(),
		ContainerID: containerID(cs.pid),
	}}
	cs.lastState = cs.state
	cs.ready = false
	restart := !cs.init || code != 0
	w.mu.Unlock()
	log.Info("Container exited", "exitCode", code)
	select {
	case <-stop:
		w.markDirty()
		return code, false
	default:
	}
	willRestart := w.pod.Spec.RestartPolicy == corev1.RestartPolicyAlways ||
		(w.pod.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && code != 0)
	if restart && willRestart {
		w.mu.Lock()
		cs.restartCount++
		w.mu.Unlock()
	}
	w.markDirty()
	return code, true
}

func containerID(pid int) string { return fmt.Sprintf("local://%d", pid) }

func (w *podWorker) containerCgroup(cs *containerState) cgroup.Group {
	return cgroup.For(w.k.cfg.Cluster, w.k.cfg.Node, string(w.pod.UID), cs.spec.Name)
}

// stopAll stops every running container: SIGTERM to its process group, up
// to grace seconds for it to exit, then SIGKILL to its whole cgroup. A
// negative grace means the containers already ended.
func (w *podWorker) stopAll(grace int64) {
	w.mu.Lock()
	var running []*containerState
	for _, cs := range w.containers {
		if cs.cmd != nil && cs.state.Running != nil {
			running = append(running, cs)
		}
	}
	w.mu.Unlock()
	if grace < 0 {
		grace = 0
	}
	if len(running) > 0 {
		w.k.log.Info("Stopping pod", "pod", w.key(), "gracePeriodSeconds", grace)
	}
	deadline := time.After(time.Duration(grace) * time.Second)
	for _, cs := range running {
		if grace > 0 {
			// The launcher made the main process a process group leader.
			_ = syscall.Kill(-cs.pid, syscall.SIGTERM)
		}
	}
	for _, cs := range running {
		select {
		case <-cs.exited:
		case <-deadline:
			_ = w.containerCgroup(cs).Kill()
			<-cs.exited
		}
	}
	_ = w.podCgroup().Kill()
}

func (w *podWorker) cleanup() {
	// Volumes of the pod's own (emptyDir, Secrets…) go with it; claims
	// live elsewhere and stay.
	_ = os.RemoveAll(w.dir)
}

// statusLoop pushes the pod's status whenever it changed.
func (w *podWorker) statusLoop(ctx context.Context) {
	// As a kubelet's status manager, it also syncs every 10 s whatever
	// changed: the API server's copy may have been changed by others (the
	// node controller marks the pods of a node it lost not ready) and must
	// come back to what the kubelet knows once it can post again.
	t := time.NewTicker(statusSyncPeriod)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.dirty:
		case <-t.C:
		}
		if err := w.pushStatus(ctx); err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
			w.k.log.Error(err, "Update pod status", "pod", w.key())
			time.Sleep(500 * time.Millisecond)
			w.markDirty()
		}
	}
}

// statusSyncPeriod is a kubelet's status manager's.
const statusSyncPeriod = 10 * time.Second

func (w *podWorker) pushStatus(ctx context.Context) error {
	// A node whose heartbeat is stopped stands for a kubelet cut off from
	// the API server: it posts nothing (the next sync after it resumes
	// brings the status up to date).
	if _, err := os.Stat(HeartbeatPausedFile(w.k.cfg.StateDir)); err == nil {
		return nil
	}
	pods := w.k.client.CoreV1().Pods(w.pod.Namespace)
	current, err := pods.Get(ctx, w.pod.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if current.UID != w.pod.UID {
		return nil
	}
	status := w.computeStatus(current)
	if reflect.DeepEqual(status, current.Status) {
		return nil
	}
	current.Status = status
	_, err = pods.UpdateStatus(ctx, current, metav1.UpdateOptions{})
	return err
}

func waiting(reason, message string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}
}
