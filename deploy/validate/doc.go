// Package validate checks the deployment files without a cluster or a
// network: the Kubernetes manifests of deploy/kubernetes decoded strictly
// into the typed API objects, and checked for what the API server would
// refuse or a rollout would trip on; the Dockerfiles of deploy/docker
// parsed as BuildKit parses them; the NATS chart's values. It is a module
// of its own, so that the Kubernetes and BuildKit libraries are no
// dependency of the runtime or the SDK; make test runs it.
package validate
