package agent

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// The agent's pass runs every second, and at once when something it
// decides on changes: its Lease or its own pod (watched through the API
// server, each by name, which is all its Role allows), or its PostgreSQL
// starting or exiting (a long poll on instance). A failover's steps then
// follow each other in milliseconds instead of pass periods.

// poke asks for a pass now.
func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// watchObjects wakes the agent on every change of its Lease and its pod.
func (a *Agent) watchObjects(ctx context.Context) {
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { a.poke() },
		UpdateFunc: func(any, any) { a.poke() },
		DeleteFunc: func(any) { a.poke() },
	}
	watch := func(c rest.Interface, resource, name string, obj runtime.Object) {
		lw := cache.NewListWatchFromClient(c, resource, a.cfg.Namespace, fields.OneTermEqualSelector("metadata.name", name))
		_, informer := cache.NewInformerWithOptions(cache.InformerOptions{ListerWatcher: lw, ObjectType: obj, Handler: handler})
		go informer.RunWithContext(ctx)
	}
	watch(a.cfg.Client.CoordinationV1().RESTClient(), "leases", a.leaseName(), &coordinationv1.Lease{})
	watch(a.cfg.Client.CoreV1().RESTClient(), "pods", a.cfg.Pod, &corev1.Pod{})
}

// watchInstance wakes the agent when PostgreSQL starts or exits, and when
// instance goes or comes back.
func (a *Agent) watchInstance(ctx context.Context) {
	var gen uint64
	down := false
	for ctx.Err() == nil {
		g, err := a.instance.WaitChange(ctx, gen)
		if err != nil {
			// instance is gone (its container died, and PostgreSQL with
			// it): look now, not at the next tick. Then try again
			// often, quietly: a restarted container answers within a
			// fraction of a second, and a restarted leader serves as
			// soon as the pass sees it.
			if !down {
				a.poke()
			}
			down, gen = true, 0
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		down = false
		if g != gen {
			gen = g
			a.poke()
		}
	}
}
