#!/usr/bin/env bash
# Creates (or reuses) bench/.venv with PyTorch for bench/bench.py.
#
# PyPI's Linux torch wheel needs the NVIDIA CUDA runtime wheels even to import on a
# machine without a GPU (torch/__init__.py preloads libcublasLt and friends), so they
# come along: a few GB, downloaded once. The benchmark itself runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install --quiet -r requirements.txt
.venv/bin/python -c "import torch; x = torch.randn(2, 3, 8, 8, requires_grad=True); torch.nn.Conv2d(3, 4, 3)(x).sum().backward(); print('torch', torch.__version__, 'ready on CPU')"
