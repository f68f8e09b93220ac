#!/usr/bin/env bash
# Prelude for running gan-rs's CUDA binaries on the GPU machine (no network, no CUDA toolkit,
# a CUDA 13.0 driver and PyTorch 2.11+cu130 in python3). Run from the repo root, with the
# binaries built by /work/cuda/build.sh in .dev/bin/:
#
# build.sh copies this file to .dev/device.sh; carry [".dev"] (and the MNIST data) to the device.
#   bash .dev/device.sh                       # prelude + smoke test only
#   source .dev/device.sh && .dev/bin/gan-cli dcgan --device cuda ...   # or append commands below
#
# What the binaries need (dynamically linked by cudarc's `dynamic-linking` feature, which
# candle-core 0.11 turns on, plus candle-kernels' link to cudart): libcuda.so.1 (the driver),
# libcudart.so.13, libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13 (and the
# libnvrtc-builtins.so.13.* it dlopens). All but libcuda come from PyTorch's pip packages
# (site-packages/nvidia/cu13/lib, or nvidia/<pkg>/lib for older layouts).
#
# The binaries arrive as .dev/bin/{gan-cli,throughput}.xz and are unpacked here first.
# Env: GAN_BIN (default .dev/bin), PYTHON (default python3), CUDALIBS_TMP (default /tmp/cudalibs).
# Sets and exports LD_LIBRARY_PATH; sets GAN_CUDA_OK=1 when the smoke test passed.

_gan_cuda_prelude() {
    local bin=${GAN_BIN:-.dev/bin} py=${PYTHON:-python3} tmp=${CUDALIBS_TMP:-/tmp/cudalibs}
    local -a dirs=()
    local d f b missing base cand

    echo "== gan-rs CUDA prelude ($(date -u +%FT%TZ), $(uname -m), $(ldd --version 2>&1 | head -n1))"
    [ -f "$bin/COMMIT" ] && echo "binaries from commit $(cat "$bin/COMMIT")"

    # (0) the binaries travel xz-compressed (~14 MB for both instead of ~120 MB): unpack them
    local x
    for x in "$bin"/*.xz; do
        [ -e "$x" ] || continue
        b=${x%.xz}
        if [ ! -x "$b" ] || [ "$x" -nt "$b" ]; then
            if command -v xz >/dev/null 2>&1; then
                xz -dc "$x" > "$b.tmp"
            else
                "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$x" "$b.tmp"
            fi || { echo "cannot unpack $x" >&2; return 1; }
            chmod +x "$b.tmp" && mv "$b.tmp" "$b" && touch -r "$x" "$b"
            echo "unpacked $b"
        fi
    done
    if [ -f "$bin/SHA256SUMS" ] && command -v sha256sum >/dev/null 2>&1; then
        (cd "$bin" && sha256sum -c --quiet SHA256SUMS) || { echo "checksum mismatch in $bin" >&2; return 1; }
    fi

    # (a) library folders of PyTorch's NVIDIA wheels (nvidia is a namespace package: may be several roots)
    local roots
    roots=$("$py" - <<'EOF' 2>/dev/null
import os, site, sys
seen = []
try:
    import nvidia
    seen += list(nvidia.__path__)
except Exception:
    pass
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    p = os.path.join(sp, "nvidia")
    if os.path.isdir(p):
        seen.append(p)
try:
    import torch
    seen.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
    print("#torch", torch.__version__, "cuda", torch.version.cuda)
except Exception as e:
    print("#no torch:", e)
out = []
for p in seen:
    p = os.path.realpath(p)
    if p not in out:
        out.append(p)
print("\n".join(out))
EOF
)
    printf '%s\n' "$roots" | grep '^#' || true
    roots=$(printf '%s\n' "$roots" | grep -v '^#' || true)
    [ -n "$roots" ] || echo "WARNING: $py found no nvidia/ package folders (is PyTorch+cu130 installed in $py?)" >&2
    # Every folder under those roots holding a shared library; cu13 first, torch/lib last.
    while IFS= read -r d; do
        [ -n "$d" ] && dirs+=("$d")
    done < <(
        for r in $roots; do
            case "$r" in */torch/lib) continue ;; esac
            find "$r" -name 'lib*.so*' \( -type f -o -type l \) -printf '%h\n' 2>/dev/null
        done | sort -u | awk '/\/cu13\//{print 0, $0; next} {print 1, $0}' | sort -k1,1n -s | cut -d' ' -f2-
    )
    for r in $roots; do case "$r" in */torch/lib) [ -d "$r" ] && dirs+=("$r") ;; esac; done

    mkdir -p "$tmp"
    local ldp="$tmp"
    for d in "${dirs[@]}"; do ldp="$ldp:$d"; done
    export LD_LIBRARY_PATH="$ldp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

    # libcuda.so.1 is the driver's: normally in the loader's cache; add the usual folders if not.
    if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
        for d in /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib \
                 /usr/lib/wsl/lib /run/nvidia/driver/usr/lib/x86_64-linux-gnu; do
            [ -e "$d/libcuda.so.1" ] && { export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"; break; }
        done
    fi

    # Whatever the loader still misses: link the nearest name we have into $tmp
    # (e.g. libcurand.so.10 from libcurand.so.10.x.y, or an unversioned .so).
    for b in "$bin"/*; do
        [ -f "$b" ] && [ -x "$b" ] || continue
        for missing in $(ldd "$b" 2>/dev/null | awk '/not found/{print $1}'); do
            base=${missing%%.so*}
            cand=""
            for d in "${dirs[@]}"; do
                for f in "$d/$missing" "$d/$missing".* "$d/$base".so.* "$d/$base".so; do
                    [ -e "$f" ] && { cand=$f; break 2; }
                done
            done
            if [ -n "$cand" ]; then
                ln -sfn "$cand" "$tmp/$missing"
                echo "linked $tmp/$missing -> $cand" >&2
            else
                echo "MISSING: $missing (needed by $b), not in: ${dirs[*]}" >&2
            fi
        done
    done

    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    for b in "$bin"/*; do
        [ -f "$b" ] && [ -x "$b" ] || continue
        echo "-- ldd $b (CUDA libraries)"
        ldd "$b" | grep -E 'cuda|cublas|curand|nvrtc|not found' || true
    done

    # (b) the GPU
    echo "-- nvidia-smi -L"
    nvidia-smi -L || echo "WARNING: nvidia-smi failed" >&2
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.used,memory.total --format=csv,noheader 2>/dev/null || true

    # (c) smoke test: the binary loads (all libraries resolve; Rust binaries bind eagerly)
    echo "-- smoke: $bin/gan-cli --help"
    if ! "$bin/gan-cli" --help > /tmp/gan-cli-help.txt 2>&1; then
        cat /tmp/gan-cli-help.txt >&2
        echo "SMOKE TEST FAILED: $bin/gan-cli --help" >&2
        return 1
    fi
    head -n 5 /tmp/gan-cli-help.txt
    GAN_CUDA_OK=1
    echo "== prelude OK"
}

GAN_CUDA_OK=0
_gan_cuda_prelude || { return 1 2>/dev/null || exit 1; }

# ---- commands go below (run from the repo root), e.g.:
# .dev/bin/throughput --model all --steps 50 --batch 64 --device cuda --json
# .dev/bin/gan-cli dcgan --device cuda --max-steps 300
