"""Stand-ins for the CUDA libraries that PyPI's Linux torch wheel links against.

PyPI has no CPU-only torch for Linux x86-64 (that build lives on PyTorch's own index,
which this project's machines cannot reach). The PyPI wheel's shared libraries name the
CUDA runtime, cuBLAS, cuDNN, NCCL, ... as DT_NEEDED, so `import torch` fails unless
those libraries exist, and the NVIDIA wheels that provide them are about 2 GB to
download and 4 GB on disk (with triton) for a benchmark that never touches a GPU.

This script writes, into torch/lib (on the RPATH of every torch library), one small
shared library per missing CUDA soname that defines exactly the symbols (and symbol
versions) torch imports from it. Every function returns an error code, or, for the
few that return a message, a pointer to a static string. Nothing on the CPU path calls
them; torch sees CUDA as unavailable (`torch.cuda.is_available()` is False) and runs
its own CPU kernels (oneDNN, MKL, ...) exactly as the full install does.

The CUDA driver (libcuda.so.1) gets no stand-in: torch loads it only on demand.

    python3 bench/cuda_stubs.py bench/.venv/lib/python3.11/site-packages/torch

Needs readelf, nm and a C compiler (binutils and gcc, present wherever Rust builds).
"""

import glob
import os
import re
import subprocess
import sys
import tempfile

# Loaded only when torch actually talks to a GPU; its absence is what "no GPU" means.
NOT_STUBBED = {"libcuda.so.1"}
# Functions whose result is a pointer (error strings, the fat-binary handle).
RETURNS_POINTER = re.compile(r"(String|Name)$|^ncclGetLastError$|^__cudaRegisterFatBinary$")
MARKER = "CUDA_STUBS.txt"


def run(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", run("readelf", "-d", "-W", path))


def version_needs(path):
    """{version name: file} from the .gnu.version_r section."""
    out, current = {}, None
    for line in run("readelf", "-V", "-W", path).splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"Name: (\S+)\s+Flags", line)
        if m and current:
            out[m.group(1)] = current
    return out


def dyn_symbols(path, undefined):
    flag = "--undefined-only" if undefined else "--defined-only"
    syms = []
    for line in run("nm", "-D", flag, path).splitlines():
        parts = line.split()
        if undefined and (len(parts) != 2 or parts[0] != "U"):
            continue  # weak undefined ("w") symbols may stay unresolved
        if not undefined and len(parts) < 3:
            continue
        name = parts[-1]
        base, _, version = name.partition("@")
        syms.append((base, version.lstrip("@")))
    return syms


def system_libraries():
    """soname -> path, as the dynamic linker's cache knows them."""
    libs = {}
    for line in run("ldconfig", "-p").splitlines():
        m = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
        if m and "x86-64" in m.group(2):
            libs.setdefault(m.group(1), m.group(3))
    return libs


def main(torch_dir):
    lib_dir = os.path.join(torch_dir, "lib")
    files = sorted(glob.glob(os.path.join(lib_dir, "*.so*")) + glob.glob(os.path.join(torch_dir, "*.so")))
    files = [f for f in files if os.path.isfile(f) and not os.path.islink(f)]
    stubs_before = set()
    marker = os.path.join(lib_dir, MARKER)
    if os.path.exists(marker):
        stubs_before = set(open(marker).read().split())
    files = [f for f in files if os.path.basename(f) not in stubs_before]
    own = {os.path.basename(f) for f in files}
    system = system_libraries()

    info = {f: (needed(f), version_needs(f), dyn_symbols(f, True)) for f in files}
    missing = set()
    for f, (need, _, _) in info.items():
        for so in need:
            if so not in own and so not in system and so not in NOT_STUBBED:
                missing.add(so)
    if not missing:
        print("cuda_stubs: every library torch links against is present; nothing to do")
        return

    defined = set()
    for f in files + [system[so] for f in files for so in info[f][0] if so in system]:
        defined.update(base for base, _ in dyn_symbols(f, False))

    # Per missing soname: {version name or "": set of symbols}.
    plan = {so: {} for so in missing}
    for f, (need, vneeds, undef) in info.items():
        wanted = [so for so in need if so in missing]
        if not wanted:
            continue
        for base, version in undef:
            if version:
                so = vneeds.get(version)
                if so in missing:
                    plan[so].setdefault(version, set()).add(base)
            elif base not in defined and not base.startswith(("Py", "_Py")):
                # An unversioned import: it may come from any of this file's missing
                # libraries; defining it in each is harmless (the first one wins).
                for so in wanted:
                    plan[so].setdefault("", set()).add(base)

    with tempfile.TemporaryDirectory() as tmp:
        for so, nodes in sorted(plan.items()):
            symbols = sorted(set().union(*nodes.values())) if nodes else []
            src = [
                "/* Generated by bench/cuda_stubs.py: a stand-in for %s. */" % so,
                'static const char message[] = "%s is a stand-in: this PyTorch has no CUDA";' % so,
            ]
            for i, name in enumerate(symbols):
                if RETURNS_POINTER.search(name):
                    src.append('const void *s%d(void) __asm__("%s");' % (i, name))
                    src.append("const void *s%d(void) { return message; }" % i)
                else:
                    # 100: cudaErrorNoDevice for the runtime; an error status for the rest.
                    src.append('long s%d(void) __asm__("%s");' % (i, name))
                    src.append("long s%d(void) { return 100; }" % i)
            c_file = os.path.join(tmp, so + ".c")
            with open(c_file, "w") as fh:
                fh.write("\n".join(src) + "\n")
            cmd = ["cc", "-shared", "-fPIC", "-O1", "-w", "-o", os.path.join(lib_dir, so), c_file,
                   "-Wl,-soname," + so]
            versioned = [v for v in nodes if v]
            if versioned:
                # Unversioned imports go into the first node: a default version
                # satisfies them.
                lines = []
                for j, v in enumerate(sorted(versioned)):
                    names = sorted(nodes[v] | (nodes.get("", set()) if j == 0 else set()))
                    lines.append("%s { global: %s; %s};" % (v, "; ".join(names), "local: *; " if j == 0 else ""))
                map_file = os.path.join(tmp, so + ".map")
                with open(map_file, "w") as fh:
                    fh.write("\n".join(lines) + "\n")
                cmd.append("-Wl,--version-script=" + map_file)
            subprocess.run(cmd, check=True)
            print("cuda_stubs: %-22s %4d symbols%s" % (so, len(symbols),
                  " (versions %s)" % ", ".join(sorted(versioned)) if versioned else ""))
    with open(marker, "w") as fh:
        fh.write("\n".join(sorted(set(plan) | stubs_before)) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 cuda_stubs.py SITE-PACKAGES/torch")
    main(os.path.abspath(sys.argv[1]))
