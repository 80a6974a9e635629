# Shared set-up for the scripts: everything a fresh machine needs, installed by the
# project itself and skipped when already there.
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UV_VERSION=0.13.9
export UV_PYTHON_DOWNLOADS=never
export PATH="$REPO/.venv/bin:$HOME/.local/bin:$PATH"

step() { printf '\n==> %s\n' "$*" >&2; }

ensure_system_tools() {
  # openssl makes the plane's certificates; prometheus scrapes the processes in the
  # dashboard test; curl waits for the processes that scripts/up starts.
  local missing=()
  command -v openssl >/dev/null || missing+=(openssl)
  command -v prometheus >/dev/null || missing+=(prometheus)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  if ! command -v go >/dev/null; then
    echo "Go 1.26 or newer is needed to build the control plane binaries" >&2
    exit 1
  fi
}

ensure_python_env() {
  if ! command -v uv >/dev/null || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    step "installing uv $UV_VERSION"
    python3 -m pip install --quiet --root-user-action=ignore "uv==$UV_VERSION"
  fi
  step "syncing the Python environment from uv.lock"
  (cd "$REPO" && uv sync --frozen --quiet)
}

ensure_binaries() {
  step "building the control plane binaries (cached after the first build)"
  bash "$REPO/tools/build-binaries.sh"
  local bin_dir=${ASYNCJOBS_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/asyncjobs/bin}
  export PATH="$bin_dir:$PATH"
}

# Only the S3 payload store needs SeaweedFS, so it is built on demand rather than with
# the control plane's binaries.
ensure_weed() {
  step "building SeaweedFS's weed, the local S3 server (cached after the first build)"
  bash "$REPO/tools/build-binaries.sh" weed
  local bin_dir=${ASYNCJOBS_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/asyncjobs/bin}
  export PATH="$bin_dir:$PATH"
}

# Only scripts/image-test needs these: buildah builds and runs the image without a daemon
# (--isolation chroot), mmdebstrap makes a stand-in base image from Debian's packages.
ensure_image_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}
