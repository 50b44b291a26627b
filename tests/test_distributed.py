"""genfast.sample on torch.distributed: two CPU processes on gloo (spawned
here with torch.multiprocessing on a free port) sample a global batch; the
gathered result on every rank equals the single-process run exactly, and
gather=False returns the rank's contiguous share. Uneven splits included."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import genfast

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def toy(x, t, shift=None):
    out = 0.3 * x + 0.01 * torch.sin(t.view(-1, 1, 1, 1) / 100)
    return out if shift is None else out + shift


CASES = [  # (global batch, sampler, use a group= rather than the default group)
    (5, "euler_ancestral", False),
    (4, "ddim", True),
    (1, "ddpm", False),  # rank 1 gets nothing
    (3, "dpmpp_2m_sde", False),  # a multistep sampler with a history state and noise
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_dir):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for batch, sampler, use_group in CASES:
            group = dist.new_group([0, 1]) if use_group else None
            shift = torch.linspace(-0.2, 0.2, batch).view(batch, 1, 1, 1).expand(batch, 4, 8, 8)
            kw = dict(sampler=sampler, steps=6, seed=7, group=group, cond={"shift": shift})
            results[(batch, sampler)] = (genfast.sample(toy, (batch, 4, 8, 8), **kw),
                                         genfast.sample(toy, (batch, 4, 8, 8), gather=False,
                                                        **kw))
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for batch, sampler, _ in CASES:
        shift = torch.linspace(-0.2, 0.2, batch).view(batch, 1, 1, 1).expand(batch, 4, 8, 8)
        single = genfast.sample(toy, (batch, 4, 8, 8), sampler=sampler, steps=6, seed=7,
                                cond={"shift": shift})
        shares = []
        for r in range(2):
            full, mine = ranks[r][(batch, sampler)]
            assert torch.equal(full, single), (batch, sampler, r)
            lo, hi = genfast._distributed.share(batch, r, 2)
            assert mine.shape[0] == hi - lo
            shares.append(mine)
        assert torch.equal(torch.cat(shares), single)


def test_share_is_contiguous_and_balanced():
    from genfast._distributed import share
    for batch in range(0, 12):
        for world in range(1, 6):
            parts = [share(batch, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == batch
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            sizes = [hi - lo for lo, hi in parts]
            assert max(sizes) - min(sizes) <= 1


def test_group_without_process_group_is_an_error():
    if dist.is_initialized():
        pytest.skip("a process group is already up")
    with pytest.raises(ValueError, match="group"):
        genfast.sample(toy, (2, 4, 4, 4), sampler="ddim", steps=2, group=object())
