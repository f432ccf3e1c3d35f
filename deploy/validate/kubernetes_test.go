package validate

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const k8sDir = "../kubernetes"

// kustomization is the part of kustomization.yaml the manifests use;
// decoded strictly, so that a field this check does not know fails it.
type kustomization struct {
	APIVersion         string `yaml:"apiVersion"`
	Kind               string
	Resources          []string
	ConfigMapGenerator []struct {
		Name  string
		Files []string
	} `yaml:"configMapGenerator"`
	Images []struct {
		Name    string
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
	}
}

func readKustomization(t *testing.T) kustomization {
	t.Helper()
	var k kustomization
	decodeStrict(t, filepath.Join(k8sDir, "kustomization.yaml"), &k)
	if k.Kind != "Kustomization" || len(k.Resources) == 0 {
		t.Fatalf("kustomization.yaml: kind %q with %d resources", k.Kind, len(k.Resources))
	}
	return k
}

// decodeStrict decodes a YAML file into v, refusing fields v does not have.
func decodeStrict(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// decodeManifests decodes every document of the files the kustomization
// lists into the Kubernetes API's typed objects, strictly: an unknown or
// misplaced field, a duplicate one or a value of the wrong type is an
// error, as the API server's field validation makes it.
func decodeManifests(t *testing.T, files []string) []runtime.Object {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(k8sDir, f))
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, gvk, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if gvk.Version != "v1" {
				t.Errorf("%s: %s is %s, not a v1 API", f, gvk.Kind, gvk.GroupVersion())
			}
			objs = append(objs, obj)
		}
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l...)
		}
	}
	return out
}

// workload is a pod template and its owner.
type workload struct {
	name     string
	selector *metav1.LabelSelector
	pod      corev1.PodTemplateSpec
	claims   []corev1.PersistentVolumeClaim
}

// TestManifests decodes the manifests strictly and checks what the API
// server would refuse and what would break at run time: selectors that
// select nothing, mounts without a volume, probes and Services naming
// ports that do not exist, containers without limits or running with
// more rights than they need.
func TestManifests(t *testing.T) {
	k := readKustomization(t)
	objs := decodeManifests(t, k.Resources)
	var workloads []workload
	var services []*corev1.Service
	var pdbs []*policyv1.PodDisruptionBudget
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			workloads = append(workloads, workload{"StatefulSet " + o.Name, o.Spec.Selector, o.Spec.Template, o.Spec.VolumeClaimTemplates})
			if svc := o.Spec.ServiceName; !slices.ContainsFunc(objs, func(x runtime.Object) bool {
				s, ok := x.(*corev1.Service)
				return ok && s.Name == svc && s.Spec.ClusterIP == corev1.ClusterIPNone
			}) {
				t.Errorf("StatefulSet %s: its serviceName %q is no headless Service of the manifests", o.Name, svc)
			}
		case *appsv1.Deployment:
			workloads = append(workloads, workload{"Deployment " + o.Name, o.Spec.Selector, o.Spec.Template, nil})
		case *corev1.Service:
			services = append(services, o)
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, o)
		default:
			t.Errorf("%T: a kind this check does not know", o)
		}
	}
	if len(workloads) == 0 {
		t.Fatal("no workload in the manifests")
	}
	images := map[string]bool{}
	for _, img := range k.Images {
		images[img.Name] = true
	}
	for _, w := range workloads {
		checkWorkload(t, w, images)
	}
	// Services and disruption budgets select the pods of a workload.
	for _, s := range services {
		w, ok := selected(workloads, labels.SelectorFromSet(s.Spec.Selector))
		if !ok || len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s selects no workload's pods", s.Name)
			continue
		}
		for _, p := range s.Spec.Ports {
			if name := p.TargetPort.String(); !hasPort(w.pod.Spec.Containers, name) {
				t.Errorf("Service %s: target port %s is no port of the %s's containers", s.Name, name, w.name)
			}
		}
	}
	for _, p := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			t.Errorf("PodDisruptionBudget %s: %v", p.Name, err)
			continue
		}
		if _, ok := selected(workloads, sel); !ok {
			t.Errorf("PodDisruptionBudget %s selects no workload's pods", p.Name)
		}
	}
}

func selected(ws []workload, sel labels.Selector) (workload, bool) {
	for _, w := range ws {
		if !sel.Empty() && sel.Matches(labels.Set(w.pod.Labels)) {
			return w, true
		}
	}
	return workload{}, false
}

func hasPort(cs []corev1.Container, name string) bool {
	for _, c := range cs {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

func checkWorkload(t *testing.T, w workload, images map[string]bool) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
		t.Errorf("%s: its selector %v does not select its pods (labels %v)", w.name, w.selector, w.pod.Labels)
	}
	spec := w.pod.Spec
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s: the pod may run as root (securityContext.runAsNonRoot)", w.name)
	}
	if a := spec.AutomountServiceAccountToken; a == nil || *a {
		t.Errorf("%s: the pod gets a service account token it does not use", w.name)
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
	}
	for _, c := range w.claims {
		volumes[c.Name] = true
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		where := w.name + " container " + c.Name
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s mounts %s, which is no volume of the pod", where, m.Name)
			}
		}
		for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
			if p == nil {
				continue
			}
			port := ""
			switch {
			case p.HTTPGet != nil:
				port = p.HTTPGet.Port.String()
			case p.TCPSocket != nil:
				port = p.TCPSocket.Port.String()
			}
			if !hasPort([]corev1.Container{c}, port) {
				t.Errorf("%s probes port %q, which it does not name", where, port)
			}
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s: want a read-only root file system, no privilege escalation and no capabilities", where)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
			if req.IsZero() || lim.IsZero() || req.Cmp(lim) > 0 {
				t.Errorf("%s: %s request %s and limit %s; want both, the request within the limit", where, r, req.String(), lim.String())
			}
		}
		// The images built here (deploy/docker) are named after their
		// Dockerfiles, and kustomization.yaml says where they are pushed.
		if !strings.Contains(c.Image, "/") && !strings.Contains(c.Image, ":") && !images[c.Image] {
			t.Errorf("%s: image %s is not in kustomization.yaml's images", where, c.Image)
		}
	}
}
