"""The one training loop every audit method reuses.

A method supplies, per phase, a loss over a batch (``loss_fn``) and optionally a per-epoch
selection computed from the per-sample history (``select_fn``); the loop does the rest: shuffling,
the optimiser step, the training-time softmax history and progress reporting. How each batch
reaches the network (each rank's share, augmentation, normalisation) is
:class:`~labelaudit.train.batches.BatchLoader`'s.

The inputs are either decoded pixels (a network trained end to end) or per-sample embeddings of
a frozen pretrained backbone (``head`` mode: a small head is trained on them). Methods never see
the difference: both are rows of :attr:`TensorData.images`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from contextlib import contextmanager, nullcontext
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.images import ProgressCallback
from ..errors import TrainingError
from ..nets.models import Ensemble, build_head, build_model, default_backbone, mean_softmax
from . import distributed
from .batch_norm import batch_norm_momentum, batch_norms, recompute_running_statistics
from .batches import BatchLoader, check_shareable, image_placement, input_preprocessing, local_batches
from .compute import (
    cpu_threads,
    format_size,
    memory_budget,
    resolve_device,
    resolve_precision,
    state_plan,
    torch_threads,
)
from .config import TrainConfig
from .history import History
from .losses import masked_mean
from .schedule import MAX_BUDGET, check_budget, learning_rate, scaled_epochs
from .tensors import MappedImages, TensorData

# History, TrainConfig and the schedule's names are importable from here too, where methods and
# users have long imported them.
__all__ = [
    "MAX_BUDGET",
    "History",
    "TrainConfig",
    "Trainer",
    "check_budget",
    "learning_rate",
    "masked_mean",
    "scaled_epochs",
]

log = logging.getLogger(__name__)


def _with_compute_threads(method):
    """Decorator: run a :class:`Trainer` method inside :meth:`Trainer.compute_threads`."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.compute_threads():
            return method(self, *args, **kwargs)

    return wrapper


class Trainer:
    """Holds the model, data and per-sample history; :meth:`run_phase` trains one phase.

    The device, augmentation and mixed-precision settings are fixed at construction, so a
    method reads as a list of phases.
    """

    def __init__(
        self,
        data: TensorData,
        config: TrainConfig,
        progress: ProgressCallback | None = None,
        networks: int = 1,
    ) -> None:
        self.config = config.validate()
        self.data = data
        self.device = resolve_device(config.device)
        self.progress = progress
        self.world, self.rank = distributed.world_size(), distributed.rank()
        check_shareable(len(data), config.batch_size, self.world)
        self.order_generator, self.generator = _generators(config.seed, self.world, self.rank)
        torch.manual_seed(config.seed)  # each network draws its own initialisation from it
        self.backbone, model, self.memory_format = _build_model(data, config, networks)
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.networks = networks
        # What trains: the model itself, or its DistributedDataParallel wrapper under torchrun
        # (gradients averaged over the ranks). Predictions use the model itself.
        self.train_model = _data_parallel(self.model, self.device) if self.world > 1 else self.model
        self.memory = _memory_plan(data, config, self.device, networks, self.world)
        self.state_dtype = getattr(torch, self.memory["state_dtype"])
        self.history = History(len(data), data.num_classes, config.history_window, self.state_dtype)
        self.batches = BatchLoader(
            data, config, self.device, self.memory["images"], self.memory_format, self.generator
        )
        self.labels = data.labels.to(self.device)
        self._tracked: list[tuple[torch.Tensor, int]] = []
        self.precision = resolve_precision(config.precision, self.device, data.is_features)
        low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=low)) if low is not None else nullcontext
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.threads = (
            cpu_threads(config, features=data.is_features) if self.device.type == "cpu" else config.threads
        )
        self.epochs_done = 0
        self.phase_seconds: dict[str, float] = {}
        # One row per epoch: phase, epoch, lr, mean loss, accuracy of the training-time
        # predictions against the training labels, share of samples used, seconds.
        self.curves: list[dict] = []

    def track_rows(self, state: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Register per-sample ``state`` (samples along ``dim``) that a loss writes for its batch.

        In a data-parallel run each rank writes only the rows of its own samples; at the end of
        every epoch the trainer copies every row from the rank that trained it to all ranks, so
        the next epoch's selection sees the complete state. One process: nothing to do.
        """
        self._tracked.append((state, dim))
        return state

    def _local_batches(self, order: torch.Tensor) -> list[torch.Tensor]:
        """This rank's share of each batch of ``order`` (:func:`~.batches.local_batches`)."""
        return local_batches(order, self.config.batch_size, self.world, self.rank)

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 images (or embeddings) of the samples at ``index`` on the device."""
        return self.batches.gather(index)

    def compute_threads(self):
        """Run the block with :attr:`threads` CPU threads (None: torch's setting), then restore it."""
        return torch_threads(self.threads)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's input for a batch of uint8 images or embeddings (:meth:`BatchLoader.normalize`)."""
        return self.batches.normalize(batch)

    @_with_compute_threads
    def run_phase(
        self,
        name: str,
        epochs: int,
        lr: float,
        loss_fn: Callable[
            [torch.Tensor, torch.Tensor, torch.Tensor, object], tuple[torch.Tensor, torch.Tensor]
        ],
        select_fn: Callable[[History], object] | None = None,
        describe: Callable[[object], str] | None = None,
        schedule: str = "constant",
    ) -> None:
        """Train ``epochs`` epochs starting at ``lr`` (``schedule``: see :func:`learning_rate`).

        ``select_fn(history)`` runs at the start of each epoch and returns a per-sample context
        (masks, weights) that ``loss_fn(logits, labels, index, context)`` reads for the batch at
        positions ``index``; ``loss_fn`` returns ``(loss, n_used)`` and a batch with
        ``n_used == 0`` takes no step. ``describe(context)`` labels the progress bar.
        """
        if epochs <= 0:
            return
        start = time.perf_counter()
        optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=lr,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
        )
        for epoch in range(epochs):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(lr, epoch, epochs, schedule)
            context = select_fn(self.history) if select_fn else None
            context = _to_device(context, self.device)
            extra = describe(context) if describe else ""
            if self.progress:
                self.progress(name, epoch, epochs, extra)
            epoch_start = time.perf_counter()
            epoch_probs, rows, loss_used = self._train_epoch(optimizer, loss_fn, context)
            if self.world > 1:  # each rank trained its share of the samples
                distributed.sum_epoch_shares([epoch_probs, loss_used], self._tracked, rows)
            loss_sum, used_sum = loss_used.tolist()  # the epoch's one sync
            mean_loss = loss_sum / used_sum if used_sum else None
            _check_finite(self.model, mean_loss, name, epoch, epochs, optimizer.param_groups[0]["lr"])
            self.history.push(epoch_probs.cpu())
            self.epochs_done += 1
            self.curves.append(
                {
                    "phase": name,
                    "epoch": self.epochs_done,
                    "lr": optimizer.param_groups[0]["lr"],
                    "loss": mean_loss,
                    "train_accuracy": float((epoch_probs.argmax(1) == self.labels).float().mean()),
                    "used_fraction": int(used_sum) / len(self.data),
                    "seconds": round(time.perf_counter() - epoch_start, 3),
                }
            )
        if self.world > 1:  # the predictions and the saved model are then one model's
            distributed.broadcast_buffers(self.model)
        if self.progress:
            self.progress(name, epochs, epochs, describe(context) if describe else "")
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - start

    def _train_epoch(
        self, optimizer: torch.optim.Optimizer, loss_fn: Callable, context: object
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass over this rank's share of the shuffled samples, a step per batch.

        Returns the epoch's training-time softmax ``(N, K)`` (zero for the samples other ranks
        trained), the ``(N,)`` bool mask of the samples this rank trained, and ``[sum of loss x
        samples used, samples used]`` (kept on the device: no sync per batch in one process).
        """
        n = len(self.data)
        self.model.train()
        epoch_probs = torch.zeros(n, self.data.num_classes, device=self.device, dtype=self.state_dtype)
        order = torch.randperm(n, generator=self.order_generator)  # the same on every rank
        batches = self._local_batches(order)
        rows = torch.zeros(n, dtype=torch.bool)
        rows[order if self.world == 1 else torch.cat(batches)] = True
        loss_used = torch.zeros(2, device=self.device, dtype=torch.float64)
        for index, images in self.batches.epoch(batches):
            x = self.normalize(self.batches.augment(images))
            with self.autocast():
                logits = self.train_model(x)
            loss, used = loss_fn(logits.float(), self.labels[index], index, context)
            epoch_probs[index] = mean_softmax(logits.detach()).to(self.state_dtype)
            self._step(optimizer, loss, int(used.item()), loss_used)
        return epoch_probs, rows, loss_used

    def _step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, used: int, loss_used) -> None:
        """One optimiser step on a batch's mean ``loss`` over ``used`` samples, added to ``loss_used``;
        no step when no sample was used (on any rank)."""
        if self.world > 1:
            # Every rank steps or none does; DistributedDataParallel averages the ranks'
            # gradients, so weigh each rank's mean loss by its share of the used samples:
            # the step is then that of the mean over the whole batch, as in one process.
            used_everywhere = int(distributed.all_reduce_sum(torch.tensor([used]))[0])
            if used_everywhere == 0:
                return
            loss = loss * (self.world * used / used_everywhere)
        elif used == 0:
            return
        loss_used[0] += loss.detach().double() * used
        loss_used[1] += used
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    @torch.no_grad()
    def clean_probs(self, index: torch.Tensor) -> torch.Tensor:
        """Softmax of the samples at ``index`` without augmentation: ``(B, K)``, or ``(M, B, K)``
        for several networks.

        Batch-norm uses the batch's own statistics (as in the training forward) and its running
        statistics are left untouched: early in training, or with few batches per epoch, the
        running statistics are far from the model's and eval-mode outputs are near uniform.
        """
        with batch_norm_momentum(self.model, 0.0), self.autocast():  # running = 1 * running + 0 * batch
            return torch.softmax(self.model(self.normalize(self._gather(index))).float(), dim=-1)

    @torch.no_grad()
    def recompute_batch_norm(self) -> None:
        """Replace every batch-norm layer's running statistics by their exact average over the
        training images without augmentation (one pass, shuffled batches of ``batch_size``, the
        order drawn from the shared generator so every rank of a data-parallel run gets the
        same statistics).

        What eval-mode predictions (the saved model, the anchor estimator) use; a method whose
        running averages drift away from its network's activations calls it after training
        (PMNAR: docs/methods.md).
        """
        if not batch_norms(self.model) or self.data.is_features:
            return
        order = torch.randperm(len(self.data), generator=self.order_generator)

        def forward(index: torch.Tensor) -> None:
            with self.autocast():
                self.model(self.normalize(self._gather(index.to(self.device))))

        with self.compute_threads():
            recompute_running_statistics(self.model, order.split(self.config.batch_size), forward)

    def clean_probs_all(self) -> torch.Tensor:
        """:meth:`clean_probs` of every training sample ``(N, K)`` (one network), in batches of
        512; in a data-parallel run each rank computes its share and every rank gets all rows."""
        n = len(self.data)
        out = torch.zeros(n, self.data.num_classes, device=self.device)
        share = torch.arange(n).tensor_split(self.world)[self.rank]
        for index in share.split(512):
            out[index.to(self.device)] = self.clean_probs(index.to(self.device))
        return distributed.all_reduce_sum(out) if self.world > 1 else out

    @_with_compute_threads
    @torch.no_grad()
    def predict(
        self,
        flip_average: bool | None = None,
        images: torch.Tensor | MappedImages | None = None,
        *,
        features: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(N, K)`` softmax of the current model without augmentation (averaged with the
        horizontally flipped view when flips are part of training), on the training images or
        on other uint8 ``images`` ``(N, C, S, S)`` (e.g. a held-out fold).

        ``features=True`` also returns the first network's penultimate activations ``(N, D)``
        (the input of its last linear layer) on the un-flipped view, from the same forward pass.
        In a data-parallel run each rank predicts its share and every rank returns all rows.
        """
        flip_average = self.config.flip if flip_average is None else flip_average
        flip_average = flip_average and not self.data.is_features  # embeddings have no flipped view
        own = images is None
        images = self.batches.images if own else images
        self.model.eval()
        out = torch.zeros(len(images), self.data.num_classes)
        captured: list[torch.Tensor] = []
        share = torch.arange(len(images)).tensor_split(self.world)[self.rank]
        rows = []
        with _penultimate_inputs(self.model, captured) if features else nullcontext():
            for index in share.split(512):
                batch = self._gather(index) if own else images[index].to(self.device)
                x = self.normalize(batch)
                with self.autocast():
                    p = mean_softmax(self.model(x))
                    if features:
                        rows.append((index, captured.pop()))  # the un-flipped view's activations
                    if flip_average:
                        p = (p + mean_softmax(self.model(x.flip(3)))) / 2
                        captured.clear()
                out[index] = p.cpu()
        out = distributed.all_reduce_sum(out) if self.world > 1 else out
        if not features:
            return out
        dim = rows[0][1].shape[1] if rows else 0
        activations = torch.zeros(len(images), dim)
        for index, value in rows:
            activations[index] = value
        if self.world > 1:
            activations = distributed.all_reduce_sum(activations)
        return out, activations

    def preprocessing(self) -> dict:
        """What a loaded model needs to prepare new images (or embeddings) the same way."""
        return input_preprocessing(self.data, self.config)


def _generators(seed: int, world: int, rank: int) -> tuple[torch.Generator, torch.Generator]:
    """``(order, draws)``: the generator of the shuffled order, the same on every rank (each trains
    its share of every batch), and that of augmentation and complementary-label draws, which
    differ per rank. One process: one generator for both."""
    order = torch.Generator().manual_seed(seed)
    if world == 1:
        return order, order
    return order, torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    )


def _build_model(
    data: TensorData, config: TrainConfig, networks: int
) -> tuple[str, nn.Module, torch.memory_format]:
    """``(backbone name, model, memory format of its input)`` for ``data``: a head on embeddings,
    else ``config.backbone``'s network; with several networks an :class:`Ensemble` whose model
    returns ``(M, B, K)`` logits (the history keeps their mean softmax)."""
    if data.is_features:
        # The backbone that made the embeddings is the scan's business; here only the head trains.
        nets = [build_head(config.head, data.channels, data.num_classes) for _ in range(networks)]
        model = nets[0] if networks == 1 else Ensemble(nets)
        return f"head-{config.head}", model, torch.contiguous_format
    backbone = config.backbone if config.backbone != "auto" else default_backbone(data.images.shape[-1])
    nets = [
        build_model(
            backbone,
            data.channels,
            data.num_classes,
            depth=config.depth,
            width=config.width,
            weights=config.weights,
        )
        for _ in range(networks)  # each draws its own initialisation from the seeded generator
    ]
    # channels_last is ~20% faster on CPU, but torch 2.14's CPU convolution backward crashes
    # (segmentation fault) in channels_last when a layer has fewer than 16 channels and the
    # batch size is odd (seen with cifar-resnet width 4, 8, 12): use it only from width 16.
    narrow = backbone == "cifar-resnet" and config.width < 16
    memory_format = torch.contiguous_format if narrow else torch.channels_last
    model = nets[0] if networks == 1 else Ensemble(nets)
    return backbone, model, memory_format


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped for a data-parallel run (gradients averaged over the ranks)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _memory_plan(
    data: TensorData, config: TrainConfig, device: torch.device, networks: int, world: int
) -> dict:
    """Where the images live (:func:`~.batches.image_placement`) and the dtype of per-sample state
    (:func:`state_plan`) within :func:`memory_budget`. All ranks of a data-parallel run store state
    in the same dtype (float16 if any rank needs it): their per-epoch sums must add like with like."""
    budget = memory_budget(config.max_memory)
    n, k = len(data), data.num_classes
    state_dtype, state_bytes = state_plan(n, k, config.history_window, networks, budget)
    if world > 1 and distributed.any_rank(state_dtype == "float16") and state_dtype == "float32":
        state_dtype, state_bytes = "float16", state_bytes // 2
    if state_bytes > budget:
        log.warning(
            "the per-sample state of %d samples x %d classes needs %s in %s, more than the memory "
            "budget of %s; it may not fit in RAM (raise --max-memory if the machine has it)",
            n,
            k,
            format_size(state_bytes),
            state_dtype,
            format_size(budget),
        )
    return {
        "budget_bytes": budget,
        "images": image_placement(data, device),
        "state_dtype": state_dtype,
        "image_bytes": int(data.images.nbytes),
        "state_bytes": int(state_bytes),
    }


@contextmanager
def _penultimate_inputs(model: nn.Module, captured: list[torch.Tensor]):
    """Run the block appending, at each forward, the input of the first network's last linear
    layer (its penultimate activations, float32 on the CPU) to ``captured``."""
    network = model.networks[0] if isinstance(model, Ensemble) else model
    last = [m for m in network.modules() if isinstance(m, nn.Linear)][-1]
    hook = last.register_forward_pre_hook(lambda _, args: captured.append(args[0].detach().float().cpu()))
    try:
        yield
    finally:
        hook.remove()


def _check_finite(
    model: nn.Module, loss: float | None, phase: str, epoch: int, epochs: int, lr: float
) -> None:
    """Raise :class:`TrainingError` when the epoch's mean loss or any weight is NaN or infinite.

    A diverged network predicts one class for everything; saving it would hand the user a model
    that looks trained. One reduction over all parameters and float buffers, one sync per epoch.
    """
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    weights_finite = bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()) if tensors else True
    if weights_finite and (loss is None or math.isfinite(loss)):
        return
    what = (
        f"the loss became {loss}"
        if loss is not None and not math.isfinite(loss)
        else "the weights became NaN or infinite"
    )
    raise TrainingError(
        f"training diverged in phase {phase!r} at epoch {epoch + 1} of {epochs}: {what} at learning rate "
        f"{lr:g}; "
        "no model was saved",
        "run again with a lower learning rate (retrain --lr, e.g. 10 times lower)",
    )


def _to_device(context, device):
    if isinstance(context, torch.Tensor):
        return context.to(device)
    if isinstance(context, tuple):
        return tuple(_to_device(c, device) for c in context)
    return context
