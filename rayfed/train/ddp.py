"""Distributed data parallel training with Ray Train, AMP and per-epoch checkpoints.

DDP (Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data
Parallel Training") keeps a full model replica on every rank and all-reduces the
gradients inside ``backward``, so the ranks hold identical parameters after
every step. Ray Train's ``TorchTrainer`` starts the ranks, sets up the process
group (gloo on CPU, NCCL on GPU), and restarts the group from the latest
checkpoint when a worker dies (``FailureConfig.max_failures``).

Each rank runs :func:`worker_loop`, whose steps are the one shared loop,
:func:`rayfed.train.loop.train_epoch`. The same worker loop serves the
centralized job (``jobs/train_ddp.py``) and a federated participant's local
round (``participant.trainer=ddp``, :func:`ddp_local_round`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rayfed.train.loop import Optimization, evaluate, make_optimizer, train_epoch
from rayfed.train.precision import amp_plan, make_grad_scaler, set_tf32, tf32_state
from rayfed.train.private import DPPlan, attach_noise_probe, make_private
from rayfed.train.trace import IndexRecorder, RankTrace, param_digest
from rayfed.train.workload import DataSource, Workload

STATE_FILE = "state.pt"


@dataclass(frozen=True)
class MlflowTarget:
    """Where rank 0 logs: the driver's run, continued from the worker."""

    uri: str
    experiment: str
    run_id: str


@dataclass(frozen=True, eq=False)
class WorkerPlan:
    """Everything a rank needs; pickled once into ``train_loop_config``."""

    model: nn.Module
    data: DataSource | Workload
    opt: Optimization
    precision: str = "fp32"
    tf32: bool = False
    seed: int = 0
    torch_threads: int | None = None
    loader_workers: int = 0
    dp: DPPlan | None = None
    mlflow: MlflowTarget | None = None
    trace_dir: str | None = None
    crash_rank: int | None = None
    crash_epoch: int = 0
    tags: dict[str, Any] = field(default_factory=dict)
    # A ray.util.queue.Queue: every rank puts {"rank": r, **metrics} after each
    # epoch, for the driver's progress display and job log.
    progress: Any = None


def _restore(model: nn.Module) -> dict[str, Any]:
    """Load the latest Ray Train checkpoint into ``model``; its state ({} if none)."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return {}
    with ckpt.as_directory() as d:
        state: dict[str, Any] = torch.load(Path(d) / STATE_FILE, map_location="cpu",
                                           weights_only=True)
    model.load_state_dict(state["model"])
    return state


def _global_epoch_stats(loss: float, seen: int, seconds: float,
                        device: torch.device) -> tuple[float, int, float]:
    """Example-weighted loss, examples and the slowest rank's seconds, over ranks."""
    sums = torch.tensor([loss * seen, float(seen)], dtype=torch.float64, device=device)
    slowest = torch.tensor([seconds], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
        dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    total = int(sums[1].item())
    return float(sums[0].item()) / max(total, 1), total, float(slowest.item())


def _quiet_rank_reports() -> None:
    """Keep Ray Train's "Reporting training result" line per rank and epoch off the
    console: the progress queue brings the reports to the job's log instead.

    Ray Train 2.x logs it under a logger named by its file path, outside
    ``ray.train``, so ``RunConfig(logging_config=...)`` does not reach it."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray Train layout: its lines stay on the console
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def worker_loop(config: dict[str, Any]) -> None:
    """One DDP rank. Ray Train calls it on every worker, again after a restart."""
    plan: WorkerPlan = config["plan"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if plan.progress is not None:
        _quiet_rank_reports()
    if plan.torch_threads is not None:
        torch.set_num_threads(plan.torch_threads)
    device = ray.train.torch.get_device()
    amp = amp_plan(plan.precision, device)
    cuda = device.type == "cuda"
    if cuda:
        set_tf32(plan.tf32)
    work = plan.data.load() if isinstance(plan.data, DataSource) else plan.data

    net = plan.model
    state = _restore(net)
    start_epoch = int(state.get("epoch", -1)) + 1
    dp_steps = int(state.get("dp_steps", 0))
    trace = RankTrace(rank=rank, world_size=world, start_epoch=start_epoch,
                      restored=bool(state), device=str(device),
                      tf32=tf32_state() if cuda else None)
    if plan.trace_dir is not None:
        trace.initial_digest = param_digest(net)

    distributed = world > 1
    # Under DP, Opacus's DPDDP wraps the model instead of torch's DDP.
    model = ray.train.torch.prepare_model(
        net, parallel_strategy="ddp" if plan.dp is None else None)
    opt = plan.opt
    optimizer: Any = make_optimizer(model.parameters(), name=opt.optimizer, lr=opt.lr,
                                    momentum=opt.momentum, weight_decay=opt.weight_decay)
    if "optimizer" in state:
        optimizer.load_state_dict(state["optimizer"])
    if plan.trace_dir is not None:
        # On the torch optimizer: DP's and the GradScaler's steps both end in it.
        optimizer.register_step_post_hook(lambda *_: trace.first_step(net))

    dataset: Any = TensorDataset(torch.from_numpy(work.x_train), torch.from_numpy(work.y_train))
    if plan.trace_dir is not None:
        dataset = IndexRecorder(dataset)
    # Distinct per rank and per attempt: DP's Poisson masks must be independent.
    generator = torch.Generator().manual_seed(plan.seed * 1_000_003 + 7919 * rank + start_epoch)
    loader: Any = DataLoader(dataset, batch_size=opt.batch_size, shuffle=True,
                             num_workers=plan.loader_workers, pin_memory=cuda,
                             generator=generator)
    # Distributed sampling from Ray Train; the shared loop copies batches to the
    # device itself (non_blocking from pinned memory), as it does everywhere.
    loader = ray.train.torch.prepare_data_loader(loader, move_to_device=False)
    if plan.dp is not None:
        noise_gen = torch.Generator(device=device).manual_seed(plan.seed + start_epoch)
        model, optimizer, loader = make_private(model, optimizer, loader, plan.dp,
                                                distributed=distributed,
                                                noise_generator=noise_gen)
        if plan.trace_dir is not None:
            attach_noise_probe(optimizer, trace.noise)
    scaler = make_grad_scaler(amp)
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    anchor = ([p.detach().clone() for p in net.parameters()] if opt.proximal_mu > 0 else None)
    tracker = _rank0_tracker(plan.mlflow) if rank == 0 else None
    x_test = torch.from_numpy(work.x_test) if work.x_test is not None else None
    y_test = torch.from_numpy(work.y_test) if work.y_test is not None else None

    for epoch in range(start_epoch, opt.epochs):
        if plan.crash_rank == rank and epoch == plan.crash_epoch and not state:
            _crash_after_commit()
        # DistributedSampler reshuffles per epoch; Opacus's DP sampler is the batch_sampler.
        for s in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
            set_epoch = getattr(s, "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
        trace.begin_epoch(dataset)
        started = time.perf_counter()
        stats = train_epoch(model, loader, optimizer, proximal_mu=opt.proximal_mu,
                            anchor=anchor, device=device, autocast_dtype=amp.autocast_dtype,
                            scaler=scaler)
        if cuda:
            torch.cuda.synchronize(device)
        loss, seen, seconds = _global_epoch_stats(stats.loss, stats.num_examples,
                                                  time.perf_counter() - started, device)
        metrics: dict[str, Any] = {
            "epoch": epoch, "loss": loss, "num_examples": seen, "epoch_seconds": seconds,
            "samples_per_second": seen / seconds if seconds > 0 else 0.0,
            "attempt_start_epoch": start_epoch, "world_size": world,
        }
        if plan.dp is not None:
            dp_steps += plan.dp.steps_per_epoch
            metrics["epsilon"] = plan.dp.epsilon(dp_steps)
        if rank == 0 and x_test is not None and y_test is not None:
            metrics["test_loss"], metrics["accuracy"] = evaluate(
                net, x_test, y_test, device=device, autocast_dtype=amp.autocast_dtype)
        if cuda:
            metrics.update(trace.tf32 or {})
        trace.end_epoch(epoch, dataset, net, plan.trace_dir)
        _report(rank, metrics, net, optimizer, scaler, epoch, dp_steps)
        if plan.progress is not None:
            plan.progress.put({"rank": rank, **metrics})
        if tracker is not None:
            tracker.log_metrics({k: float(v) for k, v in metrics.items()
                                 if isinstance(v, int | float)}, step=epoch)
    if tracker is not None:
        import mlflow

        mlflow.flush_async_logging()


def _crash_after_commit() -> None:
    """Chaos: a real worker death, once the checkpoints reported so far are committed.

    Ray Train restarts from the latest checkpoint its controller has *committed*;
    a worker that dies right after reporting can beat the commit, and the group
    then restarts one epoch earlier. Waiting makes the restart point known.
    """
    from ray.train import CheckpointConsistencyMode

    ray.train.get_all_reported_checkpoints(
        consistency_mode=CheckpointConsistencyMode.COMMITTED, timeout_s=120)
    os._exit(1)


def _report(rank: int, metrics: dict[str, Any], net: nn.Module, optimizer: Any,
            scaler: torch.amp.GradScaler | None, epoch: int, dp_steps: int) -> None:
    """Every rank reports (it is a barrier); rank 0 alone writes the checkpoint."""
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    state = {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
             "dp_steps": dp_steps}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    with tempfile.TemporaryDirectory() as d:
        torch.save(state, Path(d) / STATE_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _rank0_tracker(target: MlflowTarget | None) -> Any:
    if target is None:
        return None
    from rayfed.tracking.mlflow import MlflowTracker

    tracker = MlflowTracker(uri=target.uri, experiment=target.experiment)
    tracker.run_id = target.run_id
    return tracker


@dataclass(frozen=True)
class Scaling:
    """Ray Train's worker group: ``train.*`` or ``participant.*``."""

    num_workers: int
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=dict)


def fit(plan: WorkerPlan, scaling: Scaling, *, run_name: str, storage_path: str,
        max_failures: int = 0, keep_checkpoints: int = 2,
        console_log_level: str = "WARNING") -> ray.train.Result:
    """Run ``plan`` on a Ray Train worker group; raises if the run fails.

    Ray Train's own INFO lines (each rank's report, each checkpoint: about nine per
    epoch) stay in its log files under the Ray session; ``console_log_level``
    decides what of them reaches the console."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"plan": plan},
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=scaling.resources_per_worker or None),
        run_config=RunConfig(
            name=run_name, storage_path=os.path.abspath(storage_path),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep_checkpoints),
            # Ray Train v2's RunConfig; the v1 signature mypy sees lacks it.
            logging_config=LoggingConfig(log_level=console_log_level)),  # type: ignore[call-arg]
    )
    return trainer.fit()


def load_state(checkpoint: ray.train.Checkpoint) -> dict[str, Any]:
    with checkpoint.as_directory() as d:
        state: dict[str, Any] = torch.load(Path(d) / STATE_FILE, map_location="cpu",
                                           weights_only=True)
    return state


def ddp_local_round(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, opt: Optimization,
                    scaling: Scaling, precision: str, seed: int, run_name: str,
                    storage_path: str | None, torch_threads: int | None = None) -> float:
    """A participant's local round as a Ray Train DDP job; trains ``model`` in place.

    ``model`` holds the global weights on entry and the round's result on return.
    Returns the mean training loss of the last epoch.
    """
    work = Workload(x.numpy(), y.numpy(), None, None, 0, "participant shard")
    plan = WorkerPlan(model=model, data=work, opt=opt, precision=precision, seed=seed,
                      torch_threads=torch_threads)
    with tempfile.TemporaryDirectory(prefix="rayfed-ddp-") as tmp:
        result = fit(plan, scaling, run_name=run_name, storage_path=storage_path or tmp,
                     keep_checkpoints=1)
        if result.checkpoint is None:
            raise RuntimeError(f"Ray Train run {run_name} finished without a checkpoint")
        model.load_state_dict(load_state(result.checkpoint)["model"])
    return float((result.metrics or {}).get("loss", float("nan")))
