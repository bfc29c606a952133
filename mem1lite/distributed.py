"""Data parallelism for PPO under `accelerate launch`: everything that talks between processes.

    accelerate launch --multi_gpu --num_processes 4 -m mem1lite.cli ppo --init runs/sft --out runs/ppo-4

ppo.py reads as one-process PPO; it calls `Processes` at the few points where several processes
must agree, and with one process every call below is the identity (nothing communicates). How
the work is split (ppo.py [9]): each process plays a contiguous share of the step's episodes
(`shard`), the scored episodes are gathered so that every process holds the whole batch
(`gather_scored`), and each minibatch is split across the processes (`split`), each loss weighted
so that DDP's all-reduced gradient is the one-process gradient (`weigh`). The main process logs,
evaluates and writes; at the end all check that they hold the very same parameters (`digests`).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import torch
from torch.nn.utils.rnn import pad_sequence

from .masks import layout_forward


class Episodes:
    """Trajectories handed to the DDP-wrapped module untouched (DDP would rebuild lists and
    dataclasses in its arguments while looking for tensors to move)."""

    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items


class PolicyWithValue(torch.nn.Module):
    """The LoRA policy and the value head as one module, so that one DDP wrapper all-reduces the
    gradients of both; forward(Episodes) = layout_forward over them."""

    def __init__(self, policy, head, layout: str, temperature: float, stage_tokens: int | None = None):
        super().__init__()
        self.policy, self.head = policy, head
        self.layout, self.temperature, self.stage_tokens = layout, temperature, stage_tokens

    def forward(self, episodes: Episodes):
        return layout_forward(
            self.policy,
            episodes.items,
            self.layout,
            value_head=self.head,
            temperature=self.temperature,
            stage_tokens=self.stage_tokens,
        )


class Processes:
    """This process's place in a data-parallel run (`accelerate.Accelerator` underneath).

    Without an accelerator, or with one process, it is rank 0 of 1 and nothing communicates:
    the one-process arithmetic is the plain code path.
    """

    def __init__(self, accelerator=None):
        self.accelerator = accelerator
        self.module = None
        """the DDP-wrapped PolicyWithValue (set by `prepare`; used with several processes only)"""
        self.rank = accelerator.process_index if accelerator is not None else 0
        self.count = accelerator.num_processes if accelerator is not None else 1

    @classmethod
    def start(cls) -> Processes:
        """One process unless `accelerate launch` started several (gloo on CPU, NCCL on GPUs)."""
        # accelerate is a heavy import that evaluation and the CLI's other commands never need
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        # the main process may evaluate for a while as the others wait at the next gather
        return cls(
            Accelerator(
                cpu=not torch.cuda.is_available(),
                kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))],
            )
        )

    @property
    def device(self) -> torch.device | None:
        return self.accelerator.device if self.accelerator is not None else None

    @property
    def main(self) -> bool:
        """the process that logs, evaluates and writes"""
        return self.rank == 0

    def prepare(self, model, head, layout: str, temperature: float, *optimizers, stage_tokens=None):
        """One process: moved to the device, nothing wrapped; several: DDP around policy + value
        head (one wrapper, so one all-reduce covers both). Returns the optimizers, prepared."""
        self.module, *optimizers = self.accelerator.prepare(
            PolicyWithValue(model, head, layout, temperature, stage_tokens), *optimizers
        )
        return optimizers

    # -- playing and scoring

    def shard(self, n: int) -> tuple[int, int]:
        """This process's contiguous share [lo, hi) of n episodes."""
        return n * self.rank // self.count, n * (self.rank + 1) // self.count

    def gather_scored(self, trajs, logprobs, ref_logprobs, values, mask, seconds: float):
        """The whole batch on every process: trajectories and their (B, T) scores, re-padded."""
        if self.count == 1:
            return trajs, logprobs, ref_logprobs, values, mask, seconds
        counts = mask.sum(-1).tolist()
        rows = self.gather(
            [
                (t, logprobs[b, :c].cpu(), ref_logprobs[b, :c].cpu(), values[b, :c].cpu(), seconds)
                for b, (t, c) in enumerate(zip(trajs, counts))
            ]
        )
        device = logprobs.device

        def pad(k):
            return pad_sequence([r[k] for r in rows], batch_first=True).to(device)

        full_mask = pad_sequence([torch.ones(len(r[1]), dtype=torch.bool) for r in rows], batch_first=True)
        return [r[0] for r in rows], pad(1), pad(2), pad(3), full_mask.to(device), max(r[4] for r in rows)

    # -- updating

    def split(self, idx: list[int], mask: torch.Tensor) -> tuple[list[int], int]:
        """This process's share of minibatch `idx`, and the whole minibatch's policy tokens."""
        tokens = int(mask[torch.tensor(idx)].sum())
        return idx[self.rank :: self.count], tokens

    def forward(self, model, head, trajs, layout: str, temperature: float, stage_tokens=None):
        """layout_forward over this share; with several processes through DDP, which all-reduces
        the gradients in backward."""
        if self.count > 1:
            return self.module(Episodes(trajs))
        return layout_forward(
            model, trajs, layout, value_head=head, temperature=temperature, stage_tokens=stage_tokens
        )

    def weigh(self, loss: torch.Tensor, mask: torch.Tensor, minibatch_tokens: int, logged: list):
        """The loss to back-propagate and the minibatch-wide means of `logged` (scalars).

        Several processes: a process's loss, a mean over its share's tokens, becomes its share's
        sum over the minibatch's tokens, times the processes (DDP's gradient averaging divides
        that out again), so the all-reduced gradient is the one-process gradient. A non-finite loss
        on any process makes every process's loss NaN, so that all raise together rather than
        leave the others waiting in the next all-reduce."""
        if self.count == 1:
            return loss, logged
        share = float(mask.sum()) / max(minibatch_tokens, 1)
        loss = loss * (share * self.count)
        agreed = self.sum([0.0 if torch.isfinite(loss) else 1.0] + [float(x) * share for x in logged])
        if agreed[0] > 0:
            loss = loss * float("nan")
        return loss, agreed[1:]

    def backward(self, loss: torch.Tensor) -> None:
        if self.accelerator is not None:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    # -- agreeing

    def gather(self, items: list) -> list:
        """Every process's `items` (picklable), concatenated in rank order."""
        if self.count == 1:
            return items
        from accelerate.utils import gather_object  # several processes: accelerate is loaded

        return gather_object(items)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the processes."""
        if self.count == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, reduction="sum").tolist()

    def decide(self, flag: bool) -> bool:
        """The main process's `flag`, on every process (a time budget is read on one clock)."""
        if self.count == 1:
            return flag
        from accelerate.utils import broadcast_object_list  # several processes: accelerate is loaded

        return bool(broadcast_object_list([flag], from_process=0)[0])

    def wait(self) -> None:
        if self.count > 1:
            self.accelerator.wait_for_everyone()

    def digests(self, *modules) -> list[str]:
        """Every process's sha256 of its trainable parameters' bytes, in rank order."""
        h = hashlib.sha256()
        for m in modules:
            for p in m.parameters():
                if p.requires_grad:
                    h.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return self.gather([h.hexdigest()])
