#!/usr/bin/env bash
# Installs every Debian 12 package that llmopt's build, tests and benchmarks need
# (`install-deps.sh build`: only what the build needs).
# Idempotent: packages already present are skipped, and apt is not touched at all
# when nothing is missing.
set -euo pipefail

# What building llmopt needs (scripts/demo.sh installs only these: `install-deps.sh build`).
BUILD_PACKAGES=(
  build-essential cmake ninja-build ccache git pkg-config
  libtorch-dev libopenblas0-pthread libgloo-dev
  libhwy-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libfmt-dev libspdlog-dev
  libonnx-dev libprotobuf-dev protobuf-compiler
  libpcre2-dev libcpp-httplib-dev
)
# What the tests, benchmarks, fuzzers and peer checks add.
TEST_PACKAGES=(
  libgtest-dev libgmock-dev libbenchmark-dev
  libsentencepiece-dev
  clang libclang-rt-14-dev libomp-14-dev
  python3-venv python3-torch python3-numpy
)
PACKAGES=("${BUILD_PACKAGES[@]}")
if [[ "${1:-all}" != build ]]; then
  PACKAGES+=("${TEST_PACKAGES[@]}")
  if [[ "${LLMOPT_WITH_BROWSER:-1}" == 1 ]]; then PACKAGES+=(chromium); fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "[install-deps] installing: ${missing[*]}" >&2
  SUDO=""
  if [[ $(id -u) != 0 ]]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  echo "[install-deps] all ${#PACKAGES[@]} packages present" >&2
fi
