"""A tiny Hugging Face-style model and data set for tests/test_integrations_transformers.py;
run as a script under torchrun for the 2-process test."""

from __future__ import annotations

import torch
import transformers


class Tiny(torch.nn.Module):
    """Keyword inputs; a dict output with ``loss`` when given ``labels`` (as HF models)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
        )

    def forward(self, x, labels=None):
        logits = self.net(x)
        if labels is None:
            return {"logits": logits}
        return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}


class Data(torch.utils.data.Dataset):
    def __init__(self, n: int = 256) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Trace(transformers.TrainerCallback):
    """(lr, beta1) each optimizer step used (HF steps the scheduler after this event)."""

    def __init__(self) -> None:
        self.steps: list[tuple[float, float]] = []

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs) -> None:
        g = optimizer.param_groups[0]
        self.steps.append((g["lr"], g["betas"][0]))


def args(out: str, **kw) -> transformers.TrainingArguments:
    opts = dict(per_device_train_batch_size=16, num_train_epochs=3, learning_rate=0.1,
                logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                disable_tqdm=True, seed=0, remove_unused_columns=False,
                log_level="error")  # fmt: skip
    opts.update(kw)
    return transformers.TrainingArguments(output_dir=out, **opts)


if __name__ == "__main__":  # torchrun --nproc_per_node=2 tests/hf_workers.py OUT
    import json
    import sys

    from onecycle.integrations.transformers import OneCycleTrainer

    trace = Trace()
    if sys.argv[2:] == ["plain"]:  # the README's old pattern: total counted by hand
        from onecycle import ScheduleLR
        from onecycle.schedules import one_cycle

        model = Tiny()
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        loader = torch.utils.data.DataLoader(Data(), batch_size=16)
        sched = ScheduleLR(opt, {"lr": one_cycle(0.1)}, total_steps=3 * len(loader))
        t = transformers.Trainer(model=model, args=args(sys.argv[1]), train_dataset=Data(),
                                 optimizers=(opt, sched), callbacks=[trace])  # fmt: skip
        del sched
    else:
        t = OneCycleTrainer(model=Tiny(), args=args(sys.argv[1]), train_dataset=Data(),
                            callbacks=[trace])  # fmt: skip
    t.train()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    with open(f"{sys.argv[1]}/rank{rank}.json", "w") as f:
        json.dump({"max_steps": t.state.max_steps, "steps": trace.steps}, f)
    # a DDP model alive past its process group aborts this torch at exit: free it, then leave
    import gc

    del t
    gc.collect()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
