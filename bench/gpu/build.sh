#!/usr/bin/env bash
# Build gan-rs's `cuda` feature on a machine without a GPU, for an H200 (sm_90, CUDA 13.0 driver).
#
#   /work/cuda/build.sh SRC_DIR
#
# SRC_DIR: a gan-rs checkout (e.g. the detached worktree /work/wt-cuda). Builds
#   - gan-cli                      (cargo build --release -p gan-cli --features cuda)
#   - the `throughput` bench       (cargo build --release -p gan-models --bench throughput --features cuda)
# into CARGO_TARGET_DIR=/work/cuda/target; strips both into /work/cuda/out/<commit>/ and puts
# them, xz-compressed, in SRC_DIR/.dev/bin/ (gan-cli.xz, throughput.xz, COMMIT, SHA256SUMS),
# with SRC_DIR/.dev/device.sh (the GPU-side prelude, which unpacks them).
#
# Toolkit: CUDA 13.0.88 from PyPI (nvidia-cuda-nvcc & friends) under /work/cuda/py, laid out as a
# CUDA root in /work/cuda/root (bin/ include/ nvvm/ lib64/, lib -> lib64, and a libcuda.so
# *link-time stub* in lib64/stubs: the real libcuda.so.1 comes from the driver at run time).
# Env: JOBS (default 2) caps cargo's jobs and cudaforge's parallel nvcc runs.
set -euo pipefail

SRC=${1:?usage: build.sh SRC_DIR}
SRC=$(cd "$SRC" && pwd)
CUDA_ROOT=/work/cuda/root
JOBS=${JOBS:-2}

[ -x "$CUDA_ROOT/bin/nvcc" ] || { echo "no $CUDA_ROOT/bin/nvcc: see /work/cuda/README.md" >&2; exit 1; }
[ -e "$CUDA_ROOT/lib64/stubs/libcuda.so" ] || { echo "no libcuda stub in $CUDA_ROOT/lib64/stubs" >&2; exit 1; }

export CUDA_PATH=$CUDA_ROOT CUDA_HOME=$CUDA_ROOT CUDA_ROOT=$CUDA_ROOT
export NVCC=$CUDA_ROOT/bin/nvcc            # cudaforge (candle-kernels' build) looks here first
export PATH=$CUDA_ROOT/bin:$PATH           # cudarc's build runs `nvcc --version` from PATH
export CUDA_COMPUTE_CAP=90                 # H100/H200; no nvidia-smi here
export CUDARC_CUDA_VERSION=13000           # what cudarc would read from nvcc anyway; pinned
export NVCC_CCBIN=${NVCC_CCBIN:-/usr/bin/gcc-12}
export CUDAFORGE_THREADS=$JOBS
export CARGO_BUILD_JOBS=$JOBS
export CARGO_TARGET_DIR=/work/cuda/target
# nvcc's helpers (cicc, ptxas) need the toolkit's own libs (libnvvm ...)
export LD_LIBRARY_PATH=$CUDA_ROOT/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

cd "$SRC"
echo "== $(date -u +%FT%TZ) building $(git rev-parse --short HEAD 2>/dev/null || echo '?') from $SRC" >&2
t0=$(date +%s)

nice -n 10 cargo build --release --locked -j "$JOBS" -p gan-cli --features cuda

# The bench target's path has a hash: ask cargo for it.
bench=$(nice -n 10 cargo build --release --locked -j "$JOBS" -p gan-models --bench throughput \
          --features cuda --message-format=json-render-diagnostics \
        | jq -r 'select(.reason=="compiler-artifact" and .target.name=="throughput" and .executable!=null) | .executable' \
        | tail -n1)
[ -n "$bench" ] && [ -x "$bench" ] || { echo "throughput bench executable not found" >&2; exit 1; }

# Stripped, each binary is ~55-65 MB (candle-kernels' PTX in .rodata and its MoE/GGUF cubins
# in .nv_fatbin, unused by gan-rs but linked): too big for the device tool's 64 MiB carry.
# xz -9e brings them to ~8 + ~6 MB. SRC/.dev/bin gets only the .xz files (device.sh unpacks
# them on the GPU machine); the plain stripped binaries stay in /work/cuda/out/ for inspection.
commit=$(git describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)
out=/work/cuda/out/$commit
mkdir -p "$out" "$SRC/.dev/bin"
strip -o "$out/gan-cli" "$CARGO_TARGET_DIR/release/gan-cli"
strip -o "$out/throughput" "$bench"
rm -f "$SRC/.dev/bin/gan-cli" "$SRC/.dev/bin/throughput"   # stale plain copies would be carried too
for b in gan-cli throughput; do
  nice -n 10 xz -9e -T1 -c "$out/$b" > "$SRC/.dev/bin/$b.xz.tmp" && mv "$SRC/.dev/bin/$b.xz.tmp" "$SRC/.dev/bin/$b.xz"
done
echo "$(git rev-parse HEAD 2>/dev/null) $commit" > "$SRC/.dev/bin/COMMIT"
cp /work/cuda/device.sh "$SRC/.dev/device.sh"
( cd "$out" && sha256sum gan-cli throughput > SHA256SUMS ) && cp "$out/SHA256SUMS" "$SRC/.dev/bin/SHA256SUMS"

echo "== built in $(( $(date +%s) - t0 )) s" >&2
ls -la "$out" "$SRC/.dev" "$SRC/.dev/bin" >&2
