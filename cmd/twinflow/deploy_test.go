package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/twinflow/twinflow/runtime/secrets"
	"github.com/twinflow/twinflow/runtime/spec"
	"github.com/twinflow/twinflow/sdk"
)

// The Kubernetes manifests (deploy/kubernetes) start this binary: these
// tests check them against its flags, its files and the module spec loader,
// so that a renamed flag, a moved file or a changed port fails here rather
// than in a cluster. The manifests' schema, the Dockerfiles and the NATS
// chart's values are checked by deploy/validate.

const k8sDir = "../../deploy/kubernetes"

// k8sObject holds the parts of a manifest these tests read.
type k8sObject struct {
	Kind     string
	Metadata struct{ Name string }
	Spec     struct {
		Ports []struct {
			Name       string
			Port       int
			TargetPort string `yaml:"targetPort"`
		}
		Template struct {
			Spec podSpec
		}
		VolumeClaimTemplates []struct {
			Metadata struct{ Name string }
		} `yaml:"volumeClaimTemplates"`
	}
}

type podSpec struct {
	TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
	InitContainers                []container `yaml:"initContainers"`
	Containers                    []container
	Volumes                       []struct {
		Name      string
		ConfigMap *struct{ Name string } `yaml:"configMap"`
		Secret    *struct {
			SecretName string `yaml:"secretName"`
			Items      []struct{ Key, Path string }
		}
		EmptyDir *struct{} `yaml:"emptyDir"`
	}
}

type container struct {
	Name    string
	Command []string
	Args    []string
	Env     []struct {
		Name      string
		Value     string
		ValueFrom *struct {
			SecretKeyRef *struct{ Name, Key string } `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	}
	Ports []struct {
		Name          string
		ContainerPort int `yaml:"containerPort"`
	}
	Resources struct {
		Limits map[string]string
	}
	VolumeMounts []struct {
		Name      string
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

// readManifests reads every object of the files kustomization.yaml lists.
func readManifests(t *testing.T) []k8sObject {
	t.Helper()
	var kust struct{ Resources []string }
	readYAML(t, filepath.Join(k8sDir, "kustomization.yaml"), &kust)
	if len(kust.Resources) == 0 {
		t.Fatal("kustomization.yaml lists no resources")
	}
	var objs []k8sObject
	for _, r := range kust.Resources {
		b, err := os.ReadFile(filepath.Join(k8sDir, r))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var o k8sObject
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", r, err)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func findObject(t *testing.T, objs []k8sObject, kind, name string) k8sObject {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	t.Fatalf("the manifests have no %s %s", kind, name)
	return k8sObject{}
}

func findContainer(t *testing.T, cs []container, name string) container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return container{}
}

// containerPort is the port of the container's port of that name.
func containerPort(c container, name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

// mountOf returns the volume mount under which file lies, and the file's
// path relative to it.
func mountOf(c container, file string) (name, rel string, readOnly, ok bool) {
	for _, m := range c.VolumeMounts {
		if r, err := filepath.Rel(m.MountPath, file); err == nil && !strings.HasPrefix(r, "..") {
			return m.Name, r, m.ReadOnly, true
		}
	}
	return "", "", false, false
}

// TestWorkerManifest parses the StatefulSet's command line with twinflow
// run's own flag set, and checks what it names against the pod: the admin
// port, the files it reads, the data dir it writes, the memory and CPUs,
// and the grace period of a clean stop.
func TestWorkerManifest(t *testing.T) {
	objs := readManifests(t)
	sts := findObject(t, objs, "StatefulSet", "twinflow")
	pod := sts.Spec.Template.Spec
	c := findContainer(t, pod.Containers, "twinflow")
	if len(c.Command) != 0 || len(c.Args) == 0 || c.Args[0] != "run" {
		t.Fatalf("the worker's container runs %q %q; want the image's entrypoint (twinflow) with run and its flags", c.Command, c.Args)
	}
	fs, f := newRunFlags()
	pos, err := parse(fs, c.Args[1:])
	if err != nil {
		t.Fatalf("twinflow run refuses the worker's arguments: %v", err)
	}
	if len(pos) != 0 {
		t.Fatalf("twinflow run %q: unexpected arguments %q", c.Args[1:], pos)
	}
	if *f.clusterName == "" || *f.natsURL == "" {
		t.Errorf("the workers run without -cluster or -nats: each would be a cluster of its own")
	}

	// The admin API: probes and Services reach it by the port's name.
	_, port, err := net.SplitHostPort(*f.admin)
	if err != nil {
		t.Fatalf("-admin %q: %v", *f.admin, err)
	}
	if got := strconv.Itoa(containerPort(c, "admin")); got != port {
		t.Errorf("-admin listens on port %s, the container's port admin is %s", port, got)
	}
	if *f.adminTLSCert == "" && !*f.adminInsecure {
		t.Errorf("-admin %s is beyond loopback without -admin-tls-cert: twinflow run refuses it", *f.admin)
	}
	for _, name := range []string{"twinflow-admin", "twinflow-workers"} {
		svc := findObject(t, objs, "Service", name)
		for _, p := range svc.Spec.Ports {
			if p.TargetPort != "admin" {
				t.Errorf("Service %s targets port %q, not the worker's admin port", name, p.TargetPort)
			}
		}
	}

	// Every file a flag names is in a volume that holds it.
	volumes := map[string]int{}
	for i, v := range pod.Volumes {
		volumes[v.Name] = i
	}
	claims := map[string]bool{}
	for _, vc := range sts.Spec.VolumeClaimTemplates {
		claims[vc.Metadata.Name] = true
	}
	files := map[string]string{"-config": *f.configPath, "-nats-creds": *f.natsCreds, "-nats-ca": *f.natsCA,
		"-admin-tls-cert": *f.adminTLSCert, "-admin-tls-key": *f.adminTLSKey}
	var kust struct {
		ConfigMapGenerator []struct {
			Name  string
			Files []string
		} `yaml:"configMapGenerator"`
	}
	readYAML(t, filepath.Join(k8sDir, "kustomization.yaml"), &kust)
	for flagName, file := range files {
		if file == "" {
			continue
		}
		mount, rel, _, ok := mountOf(c, file)
		if !ok {
			t.Errorf("%s %s is in no volume of the worker", flagName, file)
			continue
		}
		v := pod.Volumes[volumes[mount]]
		switch {
		case v.Secret != nil && len(v.Secret.Items) > 0:
			if !slices.ContainsFunc(v.Secret.Items, func(it struct{ Key, Path string }) bool { return it.Path == rel }) {
				t.Errorf("%s %s: the Secret %s is mounted without %s", flagName, file, v.Secret.SecretName, rel)
			}
		case v.ConfigMap != nil:
			var keys []string
			for _, g := range kust.ConfigMapGenerator {
				if g.Name == v.ConfigMap.Name {
					for _, f := range g.Files {
						keys = append(keys, path.Base(f))
					}
				}
			}
			if !slices.Contains(keys, rel) {
				t.Errorf("%s %s: the ConfigMap %s holds %q, not %s", flagName, file, v.ConfigMap.Name, keys, rel)
			}
		}
	}
	if mount, _, readOnly, ok := mountOf(c, *f.dataDir); !ok || readOnly || !claims[mount] {
		t.Errorf("-data %s is not on a writable volume of the pod's own claim (mount %q, read-only %v)", *f.dataDir, mount, readOnly)
	}
	// The root file system is read-only: the pointer to the runtime goes
	// where XDG_RUNTIME_DIR says.
	xdg := ""
	for _, e := range c.Env {
		if e.Name == "XDG_RUNTIME_DIR" {
			xdg = e.Value
		}
	}
	if mount, _, readOnly, ok := mountOf(c, xdg); xdg == "" || !ok || readOnly || pod.Volumes[volumes[mount]].EmptyDir == nil {
		t.Errorf("XDG_RUNTIME_DIR %q is not a writable emptyDir: twinflow run writes its runtime pointer there", xdg)
	}

	// The init container copies the shared keys where twinflow run reads
	// them: the data dir's secrets, under the names it gives them.
	keys := findContainer(t, pod.InitContainers, "keys")
	script := strings.Join(keys.Command, " ")
	dst := filepath.Join(*f.dataDir, secrets.DirName)
	if !strings.Contains(script, dst+"/") {
		t.Errorf("the keys init container does not install into %s: %s", dst, script)
	}
	if m, _, _, ok := mountOf(keys, *f.dataDir); !ok || m != "data" {
		t.Errorf("the keys init container does not mount the data dir %s", *f.dataDir)
	}
	tmp := t.TempDir()
	if _, err := secrets.Ensure(tmp, nil); err != nil {
		t.Fatal(err)
	}
	installed := regexp.MustCompile(`/keys/([\w.-]+)`).FindAllStringSubmatch(script, -1)
	if len(installed) == 0 {
		t.Errorf("the keys init container installs no key: %s", script)
	}
	for _, m := range installed {
		if _, err := os.Stat(filepath.Join(tmp, secrets.DirName, m[1])); err != nil {
			t.Errorf("the keys init container installs %s, which twinflow run does not read from %s", m[1], dst)
		}
	}

	// Memory and CPUs: the budget within the limit, a shard loop per CPU.
	budget, err := parseBytes(*f.memory)
	if err != nil {
		t.Fatal(err)
	}
	// Kubernetes writes 2GiB as 2Gi.
	limit, err := parseBytes(strings.TrimSuffix(c.Resources.Limits["memory"], "i") + "iB")
	if err != nil {
		t.Fatalf("the worker's memory limit: %v", err)
	}
	if budget >= limit {
		t.Errorf("-memory %s is not below the container's memory limit %s: the Go runtime and what the budget does not count need room", *f.memory, c.Resources.Limits["memory"])
	}
	cpus, err := strconv.Atoi(c.Resources.Limits["cpu"])
	if err != nil || *f.shards < 1 || *f.shards > cpus {
		t.Errorf("-shards %d for a CPU limit of %q: give a shard loop per CPU (the default counts the node's cores)", *f.shards, c.Resources.Limits["cpu"])
	}

	// A clean stop: queued work, then the final checkpoint, each up to
	// -stop-timeout; then the leases are released.
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace <= 2**f.stopTimeout {
		t.Errorf("terminationGracePeriodSeconds %v is not longer than twice -stop-timeout %v: the worker would be killed before it hands its key groups over", grace, *f.stopTimeout)
	}

	// NATS: the servers of the chart's release, over TLS when it serves TLS.
	var values struct {
		Config struct {
			Cluster struct{ Replicas int }
			NATS    struct {
				Port int
				TLS  struct{ Enabled bool }
			} `yaml:"nats"`
		}
	}
	readYAML(t, filepath.Join(k8sDir, "nats-values.yaml"), &values)
	var want []string
	for i := range values.Config.Cluster.Replicas {
		want = append(want, fmt.Sprintf("tls://nats-%d.nats-headless:4222", i))
	}
	if got := strings.Split(*f.natsURL, ","); !values.Config.NATS.TLS.Enabled || !reflect.DeepEqual(got, want) {
		t.Errorf("-nats %s; want the servers of the NATS release over TLS, %s", *f.natsURL, strings.Join(want, ","))
	}
}

// TestKubernetesModuleSpec loads the workers' module spec as twinflow run
// does, and checks that it routes as the example's own spec does and
// calls the endpoint's Service.
func TestKubernetesModuleSpec(t *testing.T) {
	k8s, err := spec.Load(filepath.Join(k8sDir, "module.yaml"))
	if err != nil {
		t.Fatalf("the Kubernetes module spec: %v", err)
	}
	local, err := spec.Load("../../deploy/datacenter/module.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(k8s.Ingresses, local.Ingresses) || !reflect.DeepEqual(k8s.Egresses, local.Egresses) || !reflect.DeepEqual(k8s.Users, local.Users) {
		t.Errorf("deploy/kubernetes/module.yaml routes otherwise than deploy/datacenter/module.yaml: give it the same ingresses, egresses and users")
	}
	objs := readManifests(t)
	svc := findObject(t, objs, "Service", "datacenter-functions")
	dep := findObject(t, objs, "Deployment", "datacenter-functions")
	c := findContainer(t, dep.Spec.Template.Spec.Containers, "datacenter-functions")
	if len(k8s.Endpoints) != 1 {
		t.Fatalf("the module spec has %d endpoints; want the example's one", len(k8s.Endpoints))
	}
	u, err := url.Parse(k8s.Endpoints[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.Spec.Ports) != 1 || u.Hostname() != svc.Metadata.Name || u.Port() != strconv.Itoa(svc.Spec.Ports[0].Port) {
		t.Errorf("the endpoint URL %s does not name the Service %s and its port", u, svc.Metadata.Name)
	}
	listen := ""
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "-listen="); ok {
			listen = v
		}
	}
	if _, port, err := net.SplitHostPort(listen); err != nil || port != strconv.Itoa(containerPort(c, svc.Spec.Ports[0].TargetPort)) {
		t.Errorf("the endpoint listens on %q, the Service targets its port %s", listen, svc.Spec.Ports[0].TargetPort)
	}
	verify := false
	for _, e := range c.Env {
		verify = verify || (e.Name == sdk.VerifyKeyEnv && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil)
	}
	if !verify {
		t.Errorf("the endpoint gets no %s from a Secret: it would refuse every call", sdk.VerifyKeyEnv)
	}
}
