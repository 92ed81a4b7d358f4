"""One process of tests/test_distributed.py's data-parallel check, started by torchrun.

It initialises its own process group (gloo), as a user's script would, then:

1. takes its shard of the first global batch and computes the DistributedDataParallel gradient
   of a fresh model with batch norm in eval mode and no dropout (the set-up where the average
   of the ranks' gradients is exactly the gradient of the global batch); rank 0 saves it, with
   the shards gathered from all ranks;
2. calls ``attn_lib.train`` inside that process group, which must use it and leave it open.

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import attn_lib
from attn_lib.data import DeviceLoader, load_dataset
from attn_lib.training import distributed
from attn_lib.training.epoch import train_step
from attn_lib.training.precision import make_scaler

#: Shared with the test: the data, the global batch and the model of the gradient check.
GRADIENT_CHECK = dict(limit=64, batch_size=16, seed=3, model="vgg-att3-concat-pc", width=0.0625)


def first_step_gradient(x: torch.Tensor, y: torch.Tensor, group: distributed.Distributed
                        ) -> dict[str, torch.Tensor]:
    """The gradient of one training step on (x, y), averaged over the ranks by DDP."""
    dev = torch.device("cpu")
    torch.manual_seed(0)
    net = attn_lib.build_model(GRADIENT_CHECK["model"], num_classes=8,
                               width=GRADIENT_CHECK["width"], dropout=False)
    net.eval()  # batch norm normalises with its running statistics, not the chunk's
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    train_step(distributed.wrap(net, dev, group), x, y, optimizer, make_scaler(dev, "fp32"),
               dev, "fp32")
    return {name: p.grad.clone() for name, p in net.named_parameters()}


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    group = distributed.setup("cpu")
    assert group.active and not group.owns_group, group
    data = load_dataset("synthetic", "train", limit=GRADIENT_CHECK["limit"])
    loader = DeviceLoader(data, GRADIENT_CHECK["batch_size"], train=True,
                          seed=GRADIENT_CHECK["seed"], rank=group.rank,
                          world_size=group.world_size)
    x, y = next(iter(loader))
    grads = first_step_gradient(x, y, group)
    shards = [torch.empty_like(x) for _ in range(group.world_size)]
    labels = [torch.empty_like(y) for _ in range(group.world_size)]
    dist.all_gather(shards, x)
    dist.all_gather(labels, y)
    if group.is_main:
        torch.save({"grads": grads, "x": torch.cat(shards), "y": torch.cat(labels)},
                   out / "gradient.pt")

    result = attn_lib.train(out_dir=out / "run", preset="smoke", width=0.0625, limit_train=64,
                            limit_test=32, batch_size=32, epochs=1, device="cpu",
                            progress=False, save_attention=False)
    assert dist.is_initialized(), "train() closed the caller's process group"
    if group.is_main:
        (out / "history.json").write_text(json.dumps(result.history))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
