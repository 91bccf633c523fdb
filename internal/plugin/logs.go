package plugin

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	regentv1 "github.com/regent-dev/regent/api/v1alpha1"
	"github.com/regent-dev/regent/internal/names"
)

// logContainers are the containers whose logs people read, in print order.
var logContainers = []string{names.ContainerPostgres, names.ContainerAgent}

func logsCmd(o *options) *cobra.Command {
	var pod, container string
	var follow bool
	var since time.Duration
	var tail int64
	c := &cobra.Command{
		Use:   "logs CLUSTER [--pod POD] [--container postgres|agent] [-f] [--since 10m] [--tail N]",
		Short: "The members' logs (PostgreSQL's and the agents'), each line prefixed with its pod and container",
		Long: "Prints the logs of every member's postgres and agent containers, or of one pod (--pod) or one container " +
			"(--container), pod after pod; with -f, every stream is followed and their lines merged as they come.",
		Example: "  kubectl regent logs db -n shop --since 10m\n  kubectl regent logs db -f --container agent --tail 20",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if since < 0 {
				return fmt.Errorf("--since %s: a duration before now is positive, such as 10m", since)
			}
			c, rs, err := o.get(cmd, args[0])
			if err != nil {
				return err
			}
			pods, err := memberPods(cmd.Context(), c, rs)
			if err != nil {
				return err
			}
			targets, err := logTargets(rs, pods, pod, container)
			if err != nil {
				return err
			}
			cfg, _, err := o.config()
			if err != nil {
				return err
			}
			cs, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("connect to the cluster: %w", err)
			}
			opts := &corev1.PodLogOptions{Follow: follow}
			if since > 0 {
				s := int64(math.Ceil(since.Seconds()))
				opts.SinceSeconds = &s
			}
			if tail >= 0 {
				opts.TailLines = &tail
			}
			var failed []string
			open := func(t logTarget) io.ReadCloser {
				lo := opts.DeepCopy()
				lo.Container = t.container
				r, err := cs.CoreV1().Pods(rs.Namespace).GetLogs(t.pod, lo).Stream(cmd.Context())
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s/%s: %v\n", t.pod, t.container, err)
					failed = append(failed, t.pod+"/"+t.container)
					return nil
				}
				return r
			}
			var sources []logSource
			for _, t := range targets {
				r := open(t)
				if r == nil {
					continue
				}
				if follow {
					defer r.Close()
					sources = append(sources, logSource{prefix: t.prefix(), r: r})
					continue
				}
				err := mergeLines(o.out, []logSource{{prefix: t.prefix(), r: r}})
				_ = r.Close()
				if err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), err)
					failed = append(failed, t.pod+"/"+t.container)
				}
			}
			err = mergeLines(o.out, sources)
			if len(failed) > 0 {
				err = errors.Join(err, fmt.Errorf("could not read the logs of %s (above)", strings.Join(failed, ", ")))
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&pod, "pod", "", "this member only")
	f.StringVarP(&container, "container", "c", "", "postgres or agent only")
	f.BoolVarP(&follow, "follow", "f", false, "follow every stream, merging their lines")
	f.DurationVar(&since, "since", 0, "only lines newer than this, such as 10m")
	f.Int64Var(&tail, "tail", -1, "only the last N lines of each container (-1: all)")
	return c
}

// logTarget is one container of one member.
type logTarget struct{ pod, container string }

func (t logTarget) prefix() string { return t.pod + "/" + t.container + " " }

// logTargets are the containers to read: of pod (every member when empty),
// container (both when empty).
func logTargets(rs *regentv1.ReplicaSet, pods []corev1.Pod, pod, container string) ([]logTarget, error) {
	containers := logContainers
	if container != "" {
		if !slices.Contains(logContainers, container) {
			return nil, fmt.Errorf("--container %q: the members' containers are %s", container, strings.Join(logContainers, " and "))
		}
		containers = []string{container}
	}
	var out []logTarget
	for i := range pods {
		if pod != "" && pods[i].Name != pod {
			continue
		}
		for _, c := range containers {
			out = append(out, logTarget{pod: pods[i].Name, container: c})
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s is not a pod of %s/%s (pods: %s)", pod, rs.Namespace, rs.Name, podNames(pods))
	}
	return out, nil
}

// logSource is a stream of lines to print after prefix.
type logSource struct {
	prefix string
	r      io.Reader
}

// mergeLines copies every source to w, each line whole and after its
// source's prefix, in the order lines arrive, until every source ends.
func mergeLines(w io.Writer, sources []logSource) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, len(sources))
	for i, s := range sources {
		wg.Go(func() {
			br := bufio.NewReader(s.r)
			for {
				line, err := br.ReadBytes('\n')
				if len(line) > 0 {
					if line[len(line)-1] != '\n' {
						line = append(line, '\n')
					}
					mu.Lock()
					_, werr := io.WriteString(w, s.prefix+string(line))
					mu.Unlock()
					if werr != nil {
						errs[i] = werr
						return
					}
				}
				if err != nil {
					if !errors.Is(err, io.EOF) {
						errs[i] = fmt.Errorf("%s%w", s.prefix, err)
					}
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
