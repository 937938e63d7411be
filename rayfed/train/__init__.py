"""Training: the shared loop, and Ray Train DDP with AMP around it.

``loop`` is the one training loop; ``ddp`` (the only module here that imports
Ray) runs it on a Ray Train worker group; ``precision``, ``private``, ``trace``
and ``workload`` are plain helpers. See docs/training.md.
"""

from rayfed.train.loop import TrainStats, evaluate, make_optimizer, tensor_batches, train_epoch

__all__ = ["TrainStats", "evaluate", "make_optimizer", "tensor_batches", "train_epoch"]
