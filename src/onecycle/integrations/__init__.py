"""Adapters for the trainers people already use; each imports its library inside itself,
so ``import onecycle`` never loads them.

- ``onecycle.integrations.lightning``: ``OneCycle`` / ``ScheduleCallback`` (a schedule on
  the trainer's optimizer, ``total_steps`` from the trainer at train start, exact resume)
  and ``LRFinder`` (our range test on the trainer's loader).
- ``onecycle.integrations.transformers``: ``OneCycleTrainer`` (Hugging Face ``Trainer``
  with 1cycle, ``total_steps`` from the Trainer) and ``MomentumLogger``.
- ``onecycle.integrations.loggers``: ``CSVLogger`` and ``TensorBoardLogger`` callbacks
  for the ``Learner``.

See ``docs/integrations.md``.
"""
