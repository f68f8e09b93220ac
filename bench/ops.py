"""Per-layer cost in PyTorch, forward then sum().backward(), at batch 64: the twin of
`cargo bench -p gan-core --bench ops` for the layers it lists (docs/BENCHMARKS.md).

    bench/.venv/bin/python bench/ops.py [--threads N] [--reps N]
"""
import argparse
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=1)
p.add_argument("--reps", type=int, default=50)
args = p.parse_args()
torch.set_num_threads(args.threads)

b=int(__import__("os").environ.get("OPS_BATCH", "64"))  # OPS_BATCH=N: another batch
def t(shape): return (torch.rand(*shape)*2-1).requires_grad_(True)
cases=[
("DCGAN G convT 100->64, 1->7",[t([b,100,1,1]),t([100,64,7,7]),t([64])],lambda x,w,c: F.conv_transpose2d(x,w,c)),
("DCGAN conv 3x3 64->64, 7",[t([b,64,7,7]),t([64,64,3,3]),t([64])],lambda x,w,c: F.conv2d(x,w,c,padding=1)),
("DCGAN G convT 64->32, 7->14",[t([b,64,7,7]),t([64,32,4,4]),t([32])],lambda x,w,c: F.conv_transpose2d(x,w,c,stride=2,padding=1)),
("DCGAN G convT 32->1, 14->28",[t([b,32,14,14]),t([32,1,4,4]),t([1])],lambda x,w,c: F.conv_transpose2d(x,w,c,stride=2,padding=1)),
("DCGAN D conv 1->32, 28->14",[t([b,1,28,28]),t([32,1,4,4]),t([32])],lambda x,w,c: F.conv2d(x,w,c,stride=2,padding=1)),
("DCGAN D conv 32->64, 14->7",[t([b,32,14,14]),t([64,32,4,4]),t([64])],lambda x,w,c: F.conv2d(x,w,c,stride=2,padding=1)),
("DCGAN D conv 64->1, 7->1",[t([b,64,7,7]),t([1,64,7,7]),t([1])],lambda x,w,c: F.conv2d(x,w,c)),
("DANN conv 3->32 5x5, 28 b128",[t([128,3,28,28]),t([32,3,5,5]),t([32])],lambda x,w,c: F.conv2d(x,w,c)),
("DANN conv 32->48 5x5, 12 b128",[t([128,32,12,12]),t([48,32,5,5]),t([48])],lambda x,w,c: F.conv2d(x,w,c)),
("energy conv 1->16 5x5, 28->16",[t([b,1,28,28]),t([16,1,5,5]),t([16])],lambda x,w,c: F.conv2d(x,w,c,stride=2,padding=4)),
("energy conv 16->32, 16->8",[t([b,16,16,16]),t([32,16,3,3]),t([32])],lambda x,w,c: F.conv2d(x,w,c,stride=2,padding=1)),
("energy conv 32->64, 8->4",[t([b,32,8,8]),t([64,32,3,3]),t([64])],lambda x,w,c: F.conv2d(x,w,c,stride=2,padding=1)),
("energy conv 64->64, 4->2",[t([b,64,4,4]),t([64,64,3,3]),t([64])],lambda x,w,c: F.conv2d(x,w,c,stride=2,padding=1)),
("batch norm [64,64,7,7]",[t([b,64,7,7]),t([64]),t([64])],lambda x,w,c: F.batch_norm(x,None,None,w,c,training=True)),
("batch norm [64,32,14,14]",[t([b,32,14,14]),t([32]),t([32])],lambda x,w,c: F.batch_norm(x,None,None,w,c,training=True)),
("G convT 128->64, 7->14",[t([b,128,7,7]),t([128,64,4,4]),t([64])],lambda x,w,c: F.conv_transpose2d(x,w,c,stride=2,padding=1)),
("D conv 64->128, 14->7",[t([b,64,14,14]),t([128,64,4,4]),t([128])],lambda x,w,c: F.conv2d(x,w,c,stride=2,padding=1)),
]
reps = args.reps
only = __import__("os").environ.get("OPS_ONLY", "")
for name,ins,f in cases:
    if only not in name: continue
    fw=al=0
    for r in range(reps+1):
        t0=time.perf_counter(); y=f(*ins); t1=time.perf_counter(); y.sum().backward(); t2=time.perf_counter()
        for i in ins: i.grad=None
        if r>0: fw+=t1-t0; al+=t2-t0
    print(f"{name:<30} {1e3*fw/reps:8.2f} {1e3*al/reps:8.2f}")
