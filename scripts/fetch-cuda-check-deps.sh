#!/usr/bin/env bash
# Gathers what scripts/cuda-check.sh needs on a GPU machine that has PyTorch but neither Debian's
# dev packages nor network: the .debs of our Debian dependencies (into .devdeps/debs) and a copy
# of the models and text the data tests read (into .devdata/shared). Both are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.devdeps/' .git/info/exclude 2>/dev/null || printf '/.devdeps/\n/.devdata/\n' >> .git/info/exclude
mkdir -p .devdeps/debs && rm -rf .devdeps/root
(cd .devdeps/debs && apt-get download libfmt-dev libfmt9 libspdlog-dev libspdlog1.10 nlohmann-json3-dev \
  libyaml-cpp-dev libyaml-cpp0.7 libcli11-dev libhwy-dev libhwy1 libprotobuf-dev libprotobuf32 libprotobuf-lite32 \
  protobuf-compiler libprotoc32 libpcre2-dev libpcre2-8-0 libgtest-dev libgmock-dev pkgconf pkgconf-bin libpkgconf3 \
  libopenblas0-pthread libgfortran5 libquadmath0)
S=${LLMOPT_SHARED_DIR:-../shared}
mkdir -p .devdata/shared/models .devdata/shared/text
cp -r "$S/models/stories260K" "$S/models/tinyllama-bpe-17m" .devdata/shared/models/
cp "$S/text/tinystories_val.txt" .devdata/shared/text/
du -sh .devdeps .devdata
