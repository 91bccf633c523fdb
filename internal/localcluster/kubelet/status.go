package kubelet

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// computeStatus derives the pod's status from the containers' states,
// keeping transition times of conditions that did not change.
func (w *podWorker) computeStatus(current *corev1.Pod) corev1.PodStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := corev1.PodStatus{
		HostIP:    w.k.hostIP(),
		HostIPs:   []corev1.HostIP{{IP: w.k.hostIP()}},
		PodIP:     w.ip,
		PodIPs:    []corev1.PodIP{{IP: w.ip}},
		StartTime: &w.started,
		QOSClass:  current.Status.QOSClass,
	}
	status := func(cs *containerState) corev1.ContainerStatus {
		s := corev1.ContainerStatus{
			Name: cs.spec.Name, Image: cs.spec.Image, ImageID: "local://" + cs.spec.Image,
			State: cs.state, LastTerminationState: cs.lastState,
			RestartCount: cs.restartCount, Ready: cs.ready, Started: &cs.started,
		}
		if cs.pid != 0 {
			s.ContainerID = containerID(cs.pid)
		}
		if cs.state.Running != nil {
			// lastState is the termination before the current run.
			s.LastTerminationState = cs.lastState
		} else {
			s.LastTerminationState = corev1.ContainerState{}
		}
		if w.volumeMsg != "" && cs.state.Waiting != nil {
			s.State = waiting("ContainerCreating", w.volumeMsg)
		}
		return s
	}
	for _, c := range w.pod.Spec.InitContainers {
		cs := w.containers[c.Name]
		s := status(cs)
		s.Ready = cs.state.Terminated != nil && cs.state.Terminated.ExitCode == 0
		st.InitContainerStatuses = append(st.InitContainerStatuses, s)
	}
	initOK := w.initDone
	allReady, anyRunning, allTerminated, anyFailed := true, false, true, false
	for _, c := range w.pod.Spec.Containers {
		cs := w.containers[c.Name]
		st.ContainerStatuses = append(st.ContainerStatuses, status(cs))
		if !cs.ready {
			allReady = false
		}
		switch {
		case cs.state.Running != nil:
			anyRunning = true
			allTerminated = false
		case cs.state.Terminated != nil:
			if cs.state.Terminated.ExitCode != 0 {
				anyFailed = true
			}
		default:
			allTerminated = false
		}
	}
	policy := w.pod.Spec.RestartPolicy
	switch {
	case !initOK && policy == corev1.RestartPolicyNever && anyInitFailed(st.InitContainerStatuses):
		st.Phase = corev1.PodFailed
	case !initOK:
		st.Phase = corev1.PodPending
	case allTerminated && policy != corev1.RestartPolicyAlways:
		st.Phase = corev1.PodSucceeded
		if anyFailed {
			st.Phase = corev1.PodFailed
		}
	case anyRunning || restarting(w.containers):
		st.Phase = corev1.PodRunning
	default:
		st.Phase = corev1.PodPending
	}

	cond := func(t corev1.PodConditionType, ok bool, reason string) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
			reason = ""
		}
		c := corev1.PodCondition{Type: t, Status: s, Reason: reason, LastTransitionTime: metav1.Now()}
		for _, old := range current.Status.Conditions {
			if old.Type == t && old.Status == s {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	ready := initOK && allReady && anyRunning
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, true, ""),
		cond(corev1.PodInitialized, initOK, "ContainersNotInitialized"),
		cond(corev1.ContainersReady, ready, "ContainersNotReady"),
		cond(corev1.PodReady, ready, "ContainersNotReady"),
		cond(corev1.PodScheduled, true, ""),
	}
	return st
}

func anyInitFailed(statuses []corev1.ContainerStatus) bool {
	for _, s := range statuses {
		if t := s.State.Terminated; t != nil && t.ExitCode != 0 {
			return true
		}
	}
	return false
}

func restarting(cs map[string]*containerState) bool {
	for _, c := range cs {
		if !c.init && c.state.Waiting != nil && c.state.Waiting.Reason == "CrashLoopBackOff" {
			return true
		}
	}
	return false
}
