#!/usr/bin/env bash
# Recreate /work/cuda/py and /work/cuda/root from scratch (CUDA 13.0.88 toolkit from PyPI).
set -euo pipefail
cd /work/cuda
pip install --no-deps --target /work/cuda/py \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.88 nvidia-cuda-cccl==13.0.85 \
  nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-cuda-nvrtc==13.0.88 \
  nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
C=/work/cuda/py/nvidia/cu13
mkdir -p root/lib64/stubs stubsrc
ln -sfn ../py/nvidia/cu13/bin root/bin
ln -sfn ../py/nvidia/cu13/include root/include
ln -sfn ../py/nvidia/cu13/nvvm root/nvvm
ln -sfn lib64 root/lib
for f in $C/lib/*.so* $C/lib/*.a; do ln -sfn "$f" root/lib64/; done
for l in cublas cublasLt cudart nvrtc nvblas; do ln -sfn lib$l.so.13 root/lib64/lib$l.so; done
ln -sfn libcurand.so.10 root/lib64/libcurand.so
# libcuda.so link-time stub (the pip wheels have none): every cu* function cudarc 0.19.10
# declares and every one in the 13.0 cuda.h, as empty functions, SONAME libcuda.so.1.
grep -ohP '^\s+fn \Kcu[A-Za-z0-9_]+(?=\()' ~/.cargo/registry/src/*/cudarc-0.19.10/src/driver/sys/mod.rs | sort -u > stubsrc/libcuda.syms
gcc -E -P -I root/include root/include/cuda.h | grep -oP '\bcu[A-Z][A-Za-z0-9_]*(?=\s*\()' | sort -u > stubsrc/cudah.syms
sort -u stubsrc/libcuda.syms stubsrc/cudah.syms | sed 's/.*/void &(void) {}/' > stubsrc/libcuda_stub.c
gcc -shared -fPIC -o root/lib64/stubs/libcuda.so -Wl,-soname,libcuda.so.1 stubsrc/libcuda_stub.c
root/bin/nvcc --version | tail -2
