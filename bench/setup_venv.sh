#!/usr/bin/env bash
# Creates (or reuses) the virtualenv bench/.venv with PyTorch for bench/bench.py.
#
#   bash bench/setup_venv.sh           light: torch from PyPI without its CUDA wheels
#                                      (about 0.6 GB to download, 1.3 GB on disk)
#   bash bench/setup_venv.sh --full    torch with everything PyPI lists for it: the
#                                      NVIDIA CUDA wheels and triton (several GB)
#   VENV=/elsewhere bash bench/setup_venv.sh    another location
#
# PyPI's only Linux x86-64 torch is the CUDA build, whose libraries name libcudart,
# libcublas, libcudnn, ... as needed, so `import torch` fails without them. The light
# install puts small stand-ins for those libraries into torch/lib (bench/cuda_stubs.py,
# which needs cc, readelf and nm); the CPU kernels are the wheel's own, the same as in a
# full install. If the light install fails its check, the script falls back to --full.
# See bench/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VENV:-$here/.venv}"
req="$here/requirements.txt"
mode=light
case "${1:-}" in
    "") ;;
    --full) mode=full ;;
    *) echo "usage: $0 [--full]" >&2; exit 2 ;;
esac
want="$(sed -n 's/^torch==//p' "$req")"

check() {
    "$venv/bin/python" - "$want" <<'PY'
import sys
import torch
want = sys.argv[1]
assert torch.__version__.split("+")[0] == want, f"torch {torch.__version__}, want {want}"
x = torch.randn(4, 3, 8, 8, requires_grad=True)
conv = torch.nn.Conv2d(3, 4, 3)
up = torch.nn.ConvTranspose2d(4, 2, 4, 2, 1)
torch.nn.functional.leaky_relu(up(conv(x)), 0.1).square().mean().backward()
assert x.grad is not None and conv.weight.grad is not None and torch.isfinite(x.grad).all()
print(f"torch {torch.__version__} ready on CPU (CUDA available: {torch.cuda.is_available()})")
PY
}

site() {
    "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

remove_stubs() {
    local lib marker
    lib="$(site)/torch/lib"
    marker="$lib/CUDA_STUBS.txt"
    if [[ -f "$marker" ]]; then
        while read -r so; do [[ -n "$so" ]] && rm -f "$lib/$so"; done <"$marker"
        rm -f "$marker"
    fi
}

full_install() {
    echo "installing torch $want with its CUDA dependencies into $venv"
    "$venv/bin/pip" install -r "$req"
    remove_stubs
}

if [[ -x "$venv/bin/python" ]] && check 2>/dev/null; then
    if [[ "$mode" == light || ! -f "$(site)/torch/lib/CUDA_STUBS.txt" ]]; then
        echo "reusing $venv"
        exit 0
    fi
fi

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
if [[ "$mode" == full ]]; then
    full_install
    check
else
    echo "installing torch $want without its CUDA dependencies into $venv"
    "$venv/bin/pip" install --no-deps -r "$req"
    if ! "$venv/bin/python" "$here/cuda_stubs.py" "$(site)/torch" || ! check; then
        echo "the light install failed its check: falling back to the full one" >&2
        full_install
        check
    fi
fi
