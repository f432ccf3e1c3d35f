package validate

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

const dockerDir = "../docker"

// instruction is one Dockerfile instruction as BuildKit parses it.
type instruction struct {
	cmd   string // lower case: from, run, copy, user, entrypoint
	args  []string
	flags []string
	json  bool
}

func parseDockerfile(t *testing.T, file string) []instruction {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []instruction
	for _, n := range res.AST.Children {
		in := instruction{cmd: strings.ToLower(n.Value), flags: n.Flags, json: n.Attributes["json"]}
		for a := n.Next; a != nil; a = a.Next {
			in.args = append(in.args, a.Value)
		}
		out = append(out, in)
	}
	return out
}

// TestDockerfiles parses each Dockerfile and checks that it builds a
// command of this repository into a static, non-root image whose
// entrypoint is that command, with a Go at least as new as go.mod asks
// for, and that the manifests run the images that are built here.
func TestDockerfiles(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(dockerDir, "*.Dockerfile"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Dockerfile in %s (%v)", dockerDir, err)
	}
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goLine := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)`).FindSubmatch(gomod)
	built := map[string]bool{}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".Dockerfile")
		built[name] = true
		ins := parseDockerfile(t, file)
		var stages []int // index of each FROM
		for i, in := range ins {
			if in.cmd == "from" {
				stages = append(stages, i)
			}
		}
		if len(stages) < 2 {
			t.Errorf("%s: want a build stage and a runtime stage, got %d stages", file, len(stages))
			continue
		}
		// The build stage: a Go image as new as go.mod's, building one
		// main package of the repository, statically.
		from := ins[stages[0]].args[0]
		if m := regexp.MustCompile(`^golang:(\d+)\.(\d+)`).FindStringSubmatch(from); m == nil || versionLess(m[1:], []string{string(goLine[1]), string(goLine[2])}) {
			t.Errorf("%s: builds with %s; go.mod wants go %s.%s", file, from, goLine[1], goLine[2])
		}
		var out, pkg string
		for _, in := range ins[stages[0]:stages[len(stages)-1]] {
			if in.cmd != "run" || !strings.Contains(strings.Join(in.args, " "), "go build") {
				continue
			}
			cmd := strings.Join(in.args, " ")
			if !strings.Contains(cmd, "CGO_ENABLED=0") {
				t.Errorf("%s: %q does not build a static binary (CGO_ENABLED=0)", file, cmd)
			}
			fields := strings.Fields(cmd)
			for i, f := range fields {
				if f == "-o" && i+1 < len(fields) {
					out = fields[i+1]
				}
				if strings.HasPrefix(f, "./") {
					pkg = f
				}
			}
		}
		if pkg == "" || out == "" {
			t.Errorf("%s: no go build -o FILE ./PACKAGE", file)
			continue
		}
		list := exec.Command("go", "list", "-f", "{{.Name}}", pkg)
		list.Dir = "../.."
		list.Env = append(os.Environ(), "GOWORK=") // the repository's own workspace, not this module's
		if b, err := list.CombinedOutput(); err != nil || strings.TrimSpace(string(b)) != "main" {
			t.Errorf("%s builds %s, which is not a command of the repository: %s %v", file, pkg, b, err)
		}
		// The runtime stage: distroless or scratch, a non-root user, the
		// binary as the entrypoint.
		final := ins[stages[len(stages)-1]:]
		if img := final[0].args[0]; !strings.HasPrefix(img, "gcr.io/distroless/static") && img != "scratch" {
			t.Errorf("%s: the image is based on %s; want distroless static or scratch", file, img)
		}
		var user, copied, entry string
		for _, in := range final {
			switch in.cmd {
			case "user":
				user = in.args[0]
			case "copy":
				if len(in.args) == 2 && in.args[0] == out {
					copied = in.args[1]
				}
			case "entrypoint":
				if in.json && len(in.args) > 0 {
					entry = in.args[0]
				}
			}
		}
		if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
			t.Errorf("%s: the image runs as %q; want a non-root user", file, user)
		} else if n, err := strconv.Atoi(uid); err == nil {
			checkRunsAs(t, name, int64(n))
		}
		if copied == "" || entry != copied {
			t.Errorf("%s: the entrypoint %q is not the binary built to %s and copied to %q", file, entry, out, copied)
		}
	}
	// Every image the manifests build from this repository has its
	// Dockerfile, and every Dockerfile's image is pushed somewhere.
	for _, img := range readKustomization(t).Images {
		if !built[img.Name] {
			t.Errorf("kustomization.yaml sets image %s, which no Dockerfile in %s builds", img.Name, dockerDir)
		}
		delete(built, img.Name)
	}
	for name := range built {
		t.Errorf("%s/%s.Dockerfile builds an image kustomization.yaml does not set", dockerDir, name)
	}
}

// checkRunsAs checks that the pods running the image run it as its user,
// whose files the image holds.
func checkRunsAs(t *testing.T, image string, uid int64) {
	t.Helper()
	for _, o := range decodeManifests(t, readKustomization(t).Resources) {
		var pod corev1.PodSpec
		switch o := o.(type) {
		case *appsv1.StatefulSet:
			pod = o.Spec.Template.Spec
		case *appsv1.Deployment:
			pod = o.Spec.Template.Spec
		default:
			continue
		}
		for _, c := range pod.Containers {
			if c.Image != image {
				continue
			}
			if sc := pod.SecurityContext; sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != uid {
				t.Errorf("the pods of image %s do not run as its user %d", image, uid)
			}
		}
	}
}

// versionLess compares versions given as their numbers, major first.
func versionLess(a, b []string) bool {
	for i := range a {
		x, _ := strconv.Atoi(a[i])
		y, _ := strconv.Atoi(b[i])
		if x != y {
			return x < y
		}
	}
	return false
}
