"""Data-parallel training of a small model built on lstmfast.torch.GravesLSTM with
torch.distributed (DistributedDataParallel, gloo backend, CPU).

One process per replica; each trains on its shard of a fixed global batch, DDP averages the
gradients, so every replica ends with the parameters that single-process training on the whole
batch gives (the loss is a mean over the batch and the shards are equal).

Used by tests/torch/test_distributed.py (two local processes, a file store):

    python tests/ddp_worker.py --rank 0 --world-size 2 --init-method file:///tmp/store --out DIR

and runnable with torchrun on one or several machines (rank and world size from the
environment, rendezvous at MASTER_ADDR:MASTER_PORT; see docs/distributed.md):

    torchrun --nnodes 2 --nproc-per-node 1 --node-rank 0 --master-addr HOST --master-port 29500 \\
        tests/ddp_worker.py --out DIR
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import lstmfast.torch as lt

GLOBAL_BATCH = 8
T, N_IN, HIDDEN = 6, 3, 5


class Model(torch.nn.Module):
    """GravesLSTM (peepholes) over the sequence, a linear head on the last hidden state."""

    def __init__(self):
        super().__init__()
        self.lstm = lt.GravesLSTM(N_IN, HIDDEN, batch_first=True, dtype=torch.float64)
        self.head = torch.nn.Linear(HIDDEN, 1, dtype=torch.float64)

    def forward(self, x):
        out, (h_n, _) = self.lstm(x)
        return self.head(out.mean(dim=1) + h_n[0])


def build_model(seed=0):
    torch.manual_seed(seed)
    return Model()


def make_data(seed=1, n=GLOBAL_BATCH):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, N_IN, dtype=torch.float64, generator=g)
    y = torch.sin(x.sum(dim=(1, 2))).unsqueeze(1)
    return x, y


def train(model, x, y, steps=5, lr=0.1):
    """SGD on the mean squared error (a mean over the batch, so that DDP's gradient averaging
    over equal shards equals the gradient on the whole batch)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    return model


def flat_parameters(model):
    return np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)))
    ap.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)))
    ap.add_argument("--init-method", default="env://",
                    help="env:// (MASTER_ADDR / MASTER_PORT, as torchrun sets), tcp://HOST:PORT or "
                         "file:///path")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", required=True, help="directory for rank<r>.npy (final parameters)")
    args = ap.parse_args()

    torch.set_num_threads(1)          # one core per replica
    dist.init_process_group("gloo", init_method=args.init_method, rank=args.rank,
                            world_size=args.world_size)
    try:
        x, y = make_data()
        if GLOBAL_BATCH % args.world_size:
            raise SystemExit(f"the global batch ({GLOBAL_BATCH}) must split evenly over "
                             f"{args.world_size} replicas")
        shard = GLOBAL_BATCH // args.world_size
        lo, hi = args.rank * shard, (args.rank + 1) * shard
        # different seeds per rank on purpose: DDP broadcasts rank 0's parameters at wrap time
        model = DistributedDataParallel(build_model(seed=args.rank))
        train(model, x[lo:hi], y[lo:hi], steps=args.steps)
        os.makedirs(args.out, exist_ok=True)
        np.save(os.path.join(args.out, f"rank{args.rank}.npy"), flat_parameters(model.module))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Leave without interpreter finalization: gloo's threads (pt_gloo_runloop x2, gloo_tcp_loop)
    # outlive destroy_process_group (the C++ process group stays referenced; counted in
    # /proc/self/task), so a normal exit tears down Python and the C++ static objects while they
    # still run, and a rank aborted there now and then under load ("terminate called without
    # an active exception"). The results are on disk and the peers are past the barrier.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
