"""A tiny LightningModule and data for tests/test_integrations_lightning.py (importable, so
that 2-process DDP can pickle it)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class Tiny(pl.LightningModule):
    def __init__(self, scheduler: str | None = None, backbone: bool = False) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        self.head = torch.nn.Linear(8, 2)
        self.scheduler, self.with_backbone = scheduler, backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        params = self.head.parameters() if self.with_backbone else self.parameters()
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
        if self.scheduler is None:
            return opt
        from onecycle import ScheduleLR
        from onecycle.schedules import one_cycle

        total = 3 * 16  # the README's count: epochs x batches
        sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total)
        if self.scheduler == "epoch":  # Lightning's common `return [opt], [sched]`
            return [opt], [sched]
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def loader(n: int = 256, bs: int = 16, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))  # fmt: skip


class Trace(pl.Callback):
    """(lr, momentum) of each param group as each optimizer step uses it."""

    def __init__(self) -> None:
        self.steps: list[list[tuple[float, float]]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.steps.append([(g["lr"], g["momentum"]) for g in optimizer.param_groups])


def trainer(**kw) -> pl.Trainer:
    opts = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, accelerator="cpu", devices=1)  # fmt: skip
    opts.update(kw)
    return pl.Trainer(**opts)


def interrupted_after_epoch_1(tmp_path, epochs: int = 3):
    """A run of ``epochs`` epochs with OneCycle(0.1), stopped after its first epoch, with
    an epoch checkpoint in ``tmp_path``: (the trainer, the checkpoint's path)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from onecycle.integrations.lightning import OneCycle

    class StopAfterEpoch1(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                trainer.should_stop = True

    ck = ModelCheckpoint(dirpath=tmp_path, every_n_epochs=1, save_top_k=-1)
    head = trainer(max_epochs=epochs, enable_checkpointing=True,
                   callbacks=[OneCycle(0.1), Trace(), ck, StopAfterEpoch1()])  # fmt: skip
    head.fit(Tiny(), loader())
    return head, str(next(tmp_path.glob("*.ckpt")))


class TraceToFile(Trace):
    """A Trace that each DDP rank writes to ``{prefix}{rank}.json`` when training ends."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def on_train_end(self, trainer, pl_module) -> None:
        import json

        with open(f"{self.prefix}{trainer.global_rank}.json", "w") as f:
            json.dump({"total": trainer.estimated_stepping_batches, "steps": self.steps}, f)


if __name__ == "__main__":  # 2-process DDP: Lightning's launcher runs this file once per rank
    import sys
    import warnings

    from onecycle.integrations.lightning import OneCycle

    warnings.filterwarnings("ignore")
    t = trainer(max_epochs=2, strategy="ddp", devices=2,
                callbacks=[OneCycle(0.1), TraceToFile(sys.argv[1])])  # fmt: skip
    t.fit(Tiny(), loader())
    # Lightning leaves the gloo group to the interpreter's exit, where its threads can be
    # torn down while a peer is still leaving ("terminate called without an active
    # exception", SIGABRT, now and then under load): both ranks leave it together instead
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
