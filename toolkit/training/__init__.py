"""Training: datasets and loaders, the training loop, reading weights.

- :mod:`micronet.training.data`: dataset specs (``cifar10:PATH``,
  ``imagefolder:PATH``, ``fake``), loaders, ``evaluate`` (top-1 in percent) and
  calibration ``batches``;
- :mod:`micronet.training.train`: ``fit(model, data, TrainConfig(...))`` with
  optimizers, schedules, masks kept, distillation, checkpoints and resume;
- :mod:`micronet.training.checkpoints`: ``torch.load`` kept safe
  (``weights_only=True`` unless trusted) and state dicts matched to a model.

Nothing is imported here: each module is imported where it is needed, so
auditing a model never loads the training code.
"""
