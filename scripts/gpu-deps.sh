#!/usr/bin/env bash
# Fetches, here, the Debian packages meshpipe builds against into .gpu-debs/ (git-ignored), for
# scripts/gpu-check.sh to unpack on the lent GPU machine, which has CUDA, CMake, ninja and
# PyTorch but none of these and no registry (docs/toolchain.md, "The GPU machine"). About 23 MB;
# the working tree travels within 64 MiB. Gloo is left out: its CMake file names absolute
# /usr paths, so the GPU build turns it off (MP_ENABLE_GLOO=OFF). libssl3 comes along: without it
# libssl-dev's libcrypto.so link dangles in the unpacked prefix.
#   scripts/gpu-deps.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(
  libcaf-dev libcaf-core0.17 libcaf-io0.17 libcaf-openssl0.17
  libucx-dev libucx0 libnuma1 libibverbs1 libnl-3-200 libnl-route-3-200
  libglpk-dev libglpk40 libamd2 libcolamd2 libsuitesparseconfig5 libltdl7
  libfmt-dev libfmt9 libspdlog-dev libspdlog1.10 nlohmann-json3-dev libcli11-dev catch2
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libopenblas0 libgfortran5
  libssl-dev libssl3
)
mkdir -p .gpu-debs
(cd .gpu-debs && apt-get download "${pkgs[@]}" 2> /dev/null)
echo "gpu-deps: $(find .gpu-debs -name '*.deb' | wc -l) packages, $(du -sh .gpu-debs | cut -f1) in .gpu-debs"
