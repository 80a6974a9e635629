#!/usr/bin/env bash
# Builds the local control plane's binaries (kube-apiserver, kube-controller-manager,
# etcd, helm) from the Go module proxy into the cache folder, once. SeaweedFS's `weed`
# (the development S3 server) is built only when named: `build-binaries.sh weed`.
#
# A binary is rebuilt only when it is missing or reports another version than the
# pinned one, so a warm run costs a few process starts. Progress goes to stderr with
# the stage and elapsed time: the first build takes many minutes on two cores.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/versions.sh
source "$here/versions.sh"

bin_dir=${ASYNCJOBS_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/asyncjobs/bin}
mkdir -p "$bin_dir"
export CGO_ENABLED=0

# One build at a time per cache folder: a second caller (another test session, `up` in
# another shell) waits for the first and then finds the binaries cached.
exec 9>"$bin_dir/.build.lock"
if ! flock -n 9; then
  echo "[build] another build is running; waiting for it" >&2
  flock 9
fi
started=$SECONDS

say() { printf '[build %4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

# Runs a long command while printing a heartbeat, so a cold build never looks hung.
with_heartbeat() {
  local label=$1
  shift
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 20
    kill -0 "$pid" 2>/dev/null && say "$label: still building"
  done
  wait "$pid"
}

has_version() {
  local binary=$1 wanted=$2 flag=--version
  case $binary in helm | weed) flag=version ;; esac
  # The output is captured before it is searched: `| grep -q` under pipefail fails when
  # grep exits first and the binary dies of SIGPIPE, which would trigger a rebuild.
  local printed
  [ -x "$bin_dir/$binary" ] && printed=$("$bin_dir/$binary" "$flag" 2>/dev/null) &&
    grep -qF "$wanted" <<<"$printed"
}

kube_ldflags() {
  local v=$KUBERNETES_VERSION minor
  minor=$(echo "$v" | cut -d. -f2)
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$flags"
}

build_kube() {
  local cmd=$1
  if has_version "$cmd" "$KUBERNETES_VERSION"; then
    say "$cmd $KUBERNETES_VERSION: cached"
    return
  fi
  say "$cmd $KUBERNETES_VERSION: building (cold builds take 10-20 minutes)"
  (cd "$here/kube" && with_heartbeat "$cmd" go build -trimpath -ldflags "$(kube_ldflags)" \
    -o "$bin_dir/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  say "$cmd: done"
}

build_etcd() {
  if has_version etcd "$ETCD_VERSION"; then
    say "etcd $ETCD_VERSION: cached"
    return
  fi
  say "etcd $ETCD_VERSION: building"
  (cd "$here/etcd" && with_heartbeat etcd go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$bin_dir/etcd" .)
  say "etcd: done"
}

build_helm() {
  if has_version helm "$HELM_VERSION"; then
    say "helm $HELM_VERSION: cached"
    return
  fi
  say "helm $HELM_VERSION: building"
  GOBIN=$bin_dir with_heartbeat helm go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  say "helm: done"
}

# weed prints its release number and a COMMIT string that upstream's own builds fill
# in; stamping the pinned pseudo-version there is what lets has_version recognise it.
build_weed() {
  if has_version weed "$SEAWEEDFS_VERSION"; then
    say "weed $SEAWEEDFS_VERSION: cached"
    return
  fi
  # The stamp comes from versions.sh but the code from go.mod: refuse to label one
  # commit's binary with another's version.
  if ! grep -qF "github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION" "$here/seaweedfs/go.mod"; then
    echo "tools/seaweedfs/go.mod does not require seaweedfs $SEAWEEDFS_VERSION" >&2
    exit 1
  fi
  say "weed $SEAWEEDFS_VERSION: building (a cold build takes about 9 minutes on two cores)"
  (cd "$here/seaweedfs" && with_heartbeat weed go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=$SEAWEEDFS_VERSION" \
    -o "$bin_dir/weed" github.com/seaweedfs/seaweedfs/weed)
  say "weed: done"
}

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(etcd kube-apiserver kube-controller-manager helm)
for item in "${wanted[@]}"; do
  case $item in
    etcd) build_etcd ;;
    kube-apiserver | kube-controller-manager) build_kube "$item" ;;
    helm) build_helm ;;
    weed) build_weed ;;
    *) echo "unknown binary: $item" >&2 && exit 2 ;;
  esac
done
say "binaries ready in $bin_dir"
