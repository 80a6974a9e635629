# Pinned versions of the local control plane. tools/kube/go.mod and tools/etcd/go.mod
# must name the same Kubernetes and etcd releases.
KUBERNETES_VERSION=v1.37.2
ETCD_VERSION=3.6.16
HELM_VERSION=v3.22.0
# SeaweedFS, the S3 server for development and tests, built only on request
# (`tools/build-binaries.sh weed`). Its release tags (4.53, ...) are not Go module
# versions, so the pin is the commit's pseudo-version; tools/seaweedfs/go.mod must
# name the same.
SEAWEEDFS_VERSION=v0.0.0-20261109003541-7506e5f91cd6
