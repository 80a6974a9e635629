# Pinned versions of the local control plane. tools/kube/go.mod and tools/etcd/go.mod
# must name the same Kubernetes and etcd releases.
KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=3.6.16
HELM_VERSION=v3.22.0
