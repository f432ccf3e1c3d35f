package validate

import (
	"path"
	"path/filepath"
	"regexp"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// tlsValues are the chart's settings of one TLS listener.
type tlsValues struct {
	Enabled    bool
	SecretName string `yaml:"secretName"`
	Merge      map[string]any
}

// patchOp is a JSON patch operation, as the chart applies them.
type patchOp struct {
	Op    string
	Path  string
	Value map[string]any
}

// natsValues are the values of the NATS Helm chart (nats-io/k8s, chart
// nats 2.14) that nats-values.yaml sets, under the chart's names: the chart
// ships no values schema, so this is the one a typo fails against.
type natsValues struct {
	Config struct {
		Cluster struct {
			Enabled  bool
			Replicas int
			TLS      tlsValues `yaml:"tls"`
		}
		JetStream struct {
			Enabled   bool
			FileStore struct {
				Enabled bool
				PVC     struct {
					Enabled bool
					Size    string
				} `yaml:"pvc"`
			} `yaml:"fileStore"`
			MemoryStore struct{ Enabled bool } `yaml:"memoryStore"`
			Merge       map[string]any
		} `yaml:"jetstream"`
		NATS struct {
			TLS tlsValues `yaml:"tls"`
		} `yaml:"nats"`
		Merge map[string]any
	}
	TLSCA struct {
		Enabled    bool
		SecretName string `yaml:"secretName"`
		Key        string
	} `yaml:"tlsCA"`
	Container struct {
		Image struct{ Tag string }
		Patch []patchOp
	}
	PodTemplate struct {
		Patch []patchOp
	} `yaml:"podTemplate"`
	NatsBox struct{ Enabled bool } `yaml:"natsBox"`
}

// TestNATSValues checks the NATS chart's values: a cluster of three with
// JetStream on persistent volumes that syncs every write, a server recent
// enough for cluster mode, TLS with the CA the workers verify it with, and
// the authorization file mounted where the configuration includes it.
func TestNATSValues(t *testing.T) {
	var v natsValues
	decodeStrict(t, filepath.Join(k8sDir, "nats-values.yaml"), &v)
	c := v.Config
	if !c.Cluster.Enabled || c.Cluster.Replicas < 3 {
		t.Errorf("config.cluster: enabled %v, %d replicas; the workers' streams are R3 and need three servers", c.Cluster.Enabled, c.Cluster.Replicas)
	}
	if js := c.JetStream; !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled || js.MemoryStore.Enabled {
		t.Errorf("config.jetstream: want JetStream on a file store on persistent volumes, no memory store")
	}
	if s := c.JetStream.Merge["sync_interval"]; s != "always" {
		t.Errorf("config.jetstream.merge.sync_interval is %v; want always, so that an acknowledged publish survives power loss", s)
	}
	if m := regexp.MustCompile(`^(\d+)\.(\d+)\.`).FindStringSubmatch(v.Container.Image.Tag); m == nil || versionLess(m[1:], []string{"2", "12"}) {
		t.Errorf("container.image.tag %q: cluster mode needs nats-server 2.12 or later", v.Container.Image.Tag)
	}

	// TLS: the clients' and the routes' certificates, and the CA the
	// workers verify the servers with.
	workerCA := ""
	for _, o := range decodeManifests(t, readKustomization(t).Resources) {
		if s, ok := o.(*appsv1.StatefulSet); ok {
			for _, vol := range s.Spec.Template.Spec.Volumes {
				if vol.Name == "nats-ca" && vol.Secret != nil {
					workerCA = vol.Secret.SecretName
				}
			}
		}
	}
	for what, tls := range map[string]tlsValues{"config.nats.tls": c.NATS.TLS, "config.cluster.tls": c.Cluster.TLS} {
		if !tls.Enabled || tls.SecretName != workerCA {
			t.Errorf("%s: enabled %v with Secret %q; want TLS with the Secret whose CA the workers mount (%q)", what, tls.Enabled, tls.SecretName, workerCA)
		}
	}
	if c.Cluster.TLS.Merge["verify"] != true {
		t.Errorf("config.cluster.tls.merge.verify is not true: any pod that reaches the route port could join the cluster")
	}
	if !v.TLSCA.Enabled || v.TLSCA.SecretName != workerCA || v.TLSCA.Key != "ca.crt" {
		t.Errorf("tlsCA: want the CA ca.crt of Secret %q", workerCA)
	}

	// The authorization: included relative to the chart's configuration
	// directory, from a ConfigMap the container patch mounts there.
	include, _ := c.Merge["$include"].(string)
	file := path.Join("/etc/nats-config", include)
	var volume string
	for _, p := range v.Container.Patch {
		mount, _ := p.Value["mountPath"].(string)
		if p.Op == "add" && p.Path == "/volumeMounts/-" && mount != "" && path.Dir(file) == mount {
			volume, _ = p.Value["name"].(string)
		}
	}
	if include == "" || volume == "" {
		t.Fatalf("config.merge.$include %q (%s) is in no volume container.patch mounts", include, file)
	}
	found := false
	for _, p := range v.PodTemplate.Patch {
		cm, _ := p.Value["configMap"].(map[string]any)
		found = found || (p.Op == "add" && p.Path == "/spec/volumes/-" && p.Value["name"] == volume && cm["name"] != nil)
	}
	if !found {
		t.Errorf("podTemplate.patch adds no ConfigMap volume %s for the authorization file", volume)
	}
}
