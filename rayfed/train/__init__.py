"""Training: the shared local loop (and, later, Ray Train DDP with AMP)."""

from rayfed.train.loop import TrainStats, evaluate, make_optimizer, tensor_batches, train_epoch

__all__ = ["TrainStats", "evaluate", "make_optimizer", "tensor_batches", "train_epoch"]
