"""The one training loop every audit method reuses.

A method supplies, per phase, a loss over a batch (``loss_fn``) and optionally a per-epoch
selection computed from the per-sample history (``select_fn``); the loop does the rest: shuffling,
augmentation on whole batches of cached uint8 tensors, the optimiser step, the training-time
softmax history and progress reporting.

The inputs are either decoded pixels (a network trained end to end) or per-sample embeddings of
a frozen pretrained backbone (``head`` mode: a small head is trained on them). Methods never see
the difference: both are rows of :attr:`TensorData.images`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..data.images import ProgressCallback
from ..errors import ConfigError, TrainingError
from ..nets.models import Ensemble, build_head, build_model, default_backbone
from . import distributed
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
from .tensors import MappedImages, TensorData

log = logging.getLogger(__name__)


class History:
    """Ring buffer of the last ``window`` epochs of training-time softmax, ``(N, window, K)``.

    ``dtype`` float16 halves it for many samples times many classes (a probability keeps three
    significant digits); means are always computed in float32.
    """

    def __init__(
        self, num_samples: int, num_classes: int, window: int, dtype: torch.dtype = torch.float32
    ) -> None:
        self.buffer = torch.zeros(num_samples, window, num_classes, dtype=dtype)
        self.filled = 0
        self.window = window

    def push(self, probs: torch.Tensor) -> None:
        """Store one epoch's ``(N, K)`` softmax."""
        self.buffer[:, self.filled % self.window] = probs
        self.filled += 1

    def mean(self) -> torch.Tensor:
        """``(N, K)`` float32 mean over the stored epochs (uniform ``1/K`` before the first epoch)."""
        n = min(self.filled, self.window)
        if n == 0:
            return torch.full(self.buffer.shape[::2], 1.0 / self.buffer.shape[2])
        if self.buffer.dtype == torch.float32:
            return self.buffer[:, :n].mean(dim=1)
        out = torch.empty(self.buffer.shape[::2])
        for rows in torch.arange(len(self.buffer)).split(65536):  # no float32 copy of the whole buffer
            out[rows] = self.buffer[rows, :n].float().mean(dim=1)
        return out

    def mean_given(self, labels: torch.Tensor) -> torch.Tensor:
        """``(N,)`` mean probability of each sample's given label."""
        n = min(self.filled, self.window)
        if n == 0:
            return torch.full((len(labels),), 1.0 / self.buffer.shape[2])
        if self.buffer.dtype == torch.float32:
            return self.mean().gather(1, labels[:, None]).squeeze(1)
        given = self.buffer[:, :n].gather(2, labels.cpu()[:, None, None].expand(-1, n, 1))  # (N, n, 1)
        return given.float().mean(dim=1).squeeze(1)


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
        if len(data) < self.world:
            raise ConfigError(
                f"{len(data)} samples cannot be shared by {self.world} processes (each needs a sample "
                f"of every batch); run at most {len(data)} processes (torchrun --nproc-per-node), or "
                "one process without torchrun"
            )
        if config.batch_size < self.world:
            raise ConfigError(
                f"batches of {config.batch_size} samples cannot be shared by {self.world} processes "
                f"(each needs a sample of every batch); raise --batch-size to at least {self.world} "
                "or run fewer processes (torchrun --nproc-per-node)"
            )
        # The shuffled order is the same on every rank (each trains its share of every batch);
        # augmentation and complementary-label draws differ per rank. One process: one generator.
        self.order_generator = torch.Generator().manual_seed(config.seed)
        self.generator = (
            self.order_generator
            if self.world == 1
            else torch.Generator().manual_seed(
                int(np.random.SeedSequence([config.seed, self.rank]).generate_state(1)[0])
            )
        )
        torch.manual_seed(config.seed)
        if data.is_features:
            # The backbone that made the embeddings is the scan's business; here only the head trains.
            self.backbone = f"head-{config.head}"
            nets = [build_head(config.head, data.channels, data.num_classes) for _ in range(networks)]
            self.memory_format = torch.contiguous_format
        else:
            backbone = (
                config.backbone if config.backbone != "auto" else default_backbone(data.images.shape[-1])
            )
            self.backbone = backbone
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
            self.memory_format = torch.contiguous_format if narrow else torch.channels_last
        # With several networks the model returns (M, B, K) logits; the history keeps their mean softmax.
        self.model = (nets[0] if networks == 1 else Ensemble(nets)).to(
            self.device, memory_format=self.memory_format
        )
        self.networks = networks
        # What trains: the model itself, or its DistributedDataParallel wrapper under torchrun
        # (gradients averaged over the ranks). Predictions use the model itself.
        self.train_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.memory = self._memory_plan(data, networks)
        self.state_dtype = getattr(torch, self.memory["state_dtype"])
        self.history = History(len(data), data.num_classes, config.history_window, self.state_dtype)
        # Images stay on the host (read or moved batch by batch) when they are on disk or would
        # not fit the GPU; else they are copied to the device once.
        self.images = data.images if self.memory["images"] != "resident" else data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self._tracked: list[tuple[torch.Tensor, int]] = []
        shape = (1, -1) if data.is_features else (1, -1, 1, 1)
        self.mean = data.mean.to(self.device).view(shape)
        self.std = data.std.to(self.device).view(shape)
        self.precision = resolve_precision(config.precision, self.device, data.is_features)
        low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        self.autocast = (
            (lambda: torch.autocast(self.device.type, dtype=low)) if low is not None else nullcontext
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        # A head's operations are tiny: on a CPU one thread is as fast as two on a quiet machine and
        # many times faster when another process holds a core (measured 6 s vs 40-150 s for NLNL on
        # 10,000 x 1,280 embeddings); one thread also makes the result independent of the core count.
        self.threads = (
            cpu_threads(config, features=data.is_features) if self.device.type == "cpu" else config.threads
        )
        self.epochs_done = 0
        self.phase_seconds: dict[str, float] = {}
        # One row per epoch: phase, epoch, lr, mean loss, accuracy of the training-time
        # predictions against the training labels, share of samples used, seconds.
        self.curves: list[dict] = []

    def _memory_plan(self, data: TensorData, networks: int) -> dict:
        """Where the images live and the dtype of per-sample state (:func:`state_plan`) within
        :func:`memory_budget`. All ranks of a data-parallel run store state in the same dtype
        (float16 if any rank needs it): their per-epoch sums must add like with like."""
        budget = memory_budget(self.config.max_memory)
        n, k = len(data), data.num_classes
        state_dtype, state_bytes = state_plan(n, k, self.config.history_window, networks, budget)
        if self.world > 1:
            half = distributed.all_reduce_max(torch.tensor([float(state_dtype == "float16")]))
            state_dtype, state_bytes = (
                ("float16", state_bytes // 2 if state_dtype == "float32" else state_bytes)
                if half.item()
                else (state_dtype, state_bytes)
            )
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
        if data.streamed:
            images = "streamed"
        elif (
            self.device.type == "cuda" and data.images.nbytes > 0.5 * torch.cuda.mem_get_info(self.device)[0]
        ):
            images = "host"  # in RAM, moved to the GPU batch by batch
        else:
            images = "resident"
        return {
            "budget_bytes": budget,
            "images": images,
            "state_dtype": state_dtype,
            "image_bytes": int(data.images.nbytes),
            "state_bytes": int(state_bytes),
        }

    def track_rows(self, state: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """Register per-sample ``state`` (samples along ``dim``) that a loss writes for its batch.

        In a data-parallel run each rank writes only the rows of its own samples; at the end of
        every epoch the trainer copies every row from the rank that trained it to all ranks, so
        the next epoch's selection sees the complete state. One process: nothing to do.
        """
        self._tracked.append((state, dim))
        return state

    def _local_batches(self, order: torch.Tensor) -> list[torch.Tensor]:
        """This rank's share of each batch of ``order``: the whole batch in one process; else every
        ``world``-th sample, a last batch too small to share merged into the one before."""
        batches = list(order.split(self.config.batch_size))
        if self.world == 1:
            return batches
        if len(batches) > 1 and len(batches[-1]) < self.world:
            batches[-2:] = [torch.cat(batches[-2:])]
        return [batch[self.rank :: self.world] for batch in batches]

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        """uint8 images (or embeddings) of the samples at ``index`` on the device."""
        if self.memory["images"] == "resident":
            return self.images[index.to(self.device)]
        return self.images[index.cpu()].to(self.device, non_blocking=True)

    def _batches(self, batches: list[torch.Tensor]):
        """``(index on the device, images on the device)`` per batch; images read from disk are
        read one batch ahead in a background thread while the current batch trains."""
        if self.memory["images"] == "resident":
            for index in batches:
                index = index.to(self.device)
                yield index, self.images[index]
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelaudit-prefetch") as pool:
            ahead = pool.submit(self.images.__getitem__, batches[0]) if batches else None
            for i, index in enumerate(batches):
                images = ahead.result()
                if i + 1 < len(batches):
                    ahead = pool.submit(self.images.__getitem__, batches[i + 1])
                yield index.to(self.device), images.to(self.device, non_blocking=True)

    def _sync_epoch(self, epoch_probs: torch.Tensor, rows: torch.Tensor, loss_used: torch.Tensor) -> None:
        """Sum each rank's share of the epoch's softmax, tracked state and loss over the ranks."""
        if self.world == 1:
            return
        distributed.all_reduce_sum(epoch_probs)  # each row is non-zero on the one rank that trained it
        distributed.all_reduce_sum(loss_used)
        for state, dim in self._tracked:
            shape = [1] * state.dim()
            shape[dim] = len(rows)
            state.mul_(rows.view(shape).to(state.device, state.dtype))
            distributed.all_reduce_sum(state)

    def _sync_buffers(self) -> None:
        """Give every rank rank 0's batch-norm running statistics (DistributedDataParallel
        broadcasts them before each forward, so after the last step they differ per rank): the
        predictions and the saved model are then one model's."""
        if self.world > 1:
            for buffer in self.model.buffers():
                distributed.broadcast(buffer)

    def compute_threads(self):
        """Run the block with :attr:`threads` CPU threads (None: torch's setting), then restore it."""
        return torch_threads(self.threads)

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, C, S, S)`` -> normalised float in the model's memory format; embeddings
        ``(B, D)`` -> standardised per dimension."""
        if self.data.is_features:
            return batch.float().sub_(self.mean).div_(self.std)
        x = batch.float().div_(255).sub_(self.mean).div_(self.std)
        return x.contiguous(memory_format=self.memory_format)

    def augment(self, batch: torch.Tensor) -> torch.Tensor:
        """Random crop with zero padding and random horizontal flip, on the whole batch at once.

        Embeddings are not augmented: they come from one fixed view of each image.
        """
        if self.data.is_features:
            return batch
        pad = self.config.crop_padding
        b, _, h, w = batch.shape
        if pad:
            padded = nn.functional.pad(batch, (pad, pad, pad, pad))
            dy = torch.randint(0, 2 * pad + 1, (b,), generator=self.generator).to(batch.device)
            dx = torch.randint(0, 2 * pad + 1, (b,), generator=self.generator).to(batch.device)
            rows = (dy[:, None] + torch.arange(h, device=batch.device))[:, None, :, None]  # (B, 1, H, 1)
            cols = (dx[:, None] + torch.arange(w, device=batch.device))[:, None, None, :]  # (B, 1, 1, W)
            batch = padded[
                torch.arange(b, device=batch.device)[:, None, None, None],
                torch.arange(batch.shape[1], device=batch.device)[None, :, None, None],
                rows,
                cols,
            ]
        if self.config.flip:
            flip = (torch.rand(b, generator=self.generator) < 0.5).to(batch.device)
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
        return batch

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
        n, k = len(self.data), self.data.num_classes
        for epoch in range(epochs):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(lr, epoch, epochs, schedule)
            context = select_fn(self.history) if select_fn else None
            context = _to_device(context, self.device)
            extra = describe(context) if describe else ""
            if self.progress:
                self.progress(name, epoch, epochs, extra)
            self.model.train()
            epoch_start = time.perf_counter()
            epoch_probs = torch.zeros(n, k, device=self.device, dtype=self.state_dtype)
            order = torch.randperm(n, generator=self.order_generator)
            batches = self._local_batches(order)
            rows = torch.zeros(n, dtype=torch.bool)  # the samples this rank trains this epoch
            rows[order if self.world == 1 else torch.cat(batches)] = True
            # [sum of loss x samples, samples] on the device: no extra sync per batch in one process
            loss_used = torch.zeros(2, device=self.device, dtype=torch.float64)
            for index, images in self._batches(batches):
                x = self.normalize(self.augment(images))
                with self.autocast():
                    logits = self.train_model(x)
                loss, used = loss_fn(logits.float(), self.labels[index], index, context)
                epoch_probs[index] = _mean_softmax(logits.detach().float()).to(self.state_dtype)
                used = int(used.item())
                if self.world > 1:
                    # Every rank steps or none does; DistributedDataParallel averages the ranks'
                    # gradients, so weigh each rank's mean loss by its share of the used samples:
                    # the step is then that of the mean over the whole batch, as in one process.
                    used_everywhere = int(distributed.all_reduce_sum(torch.tensor([used]))[0])
                    if used_everywhere == 0:
                        continue
                    loss = loss * (self.world * used / used_everywhere)
                elif used == 0:
                    continue
                loss_used[0] += loss.detach().double() * used
                loss_used[1] += used
                optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(optimizer)
                self.scaler.update()
            self._sync_epoch(epoch_probs, rows, loss_used)
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
                    "used_fraction": int(used_sum) / n,
                    "seconds": round(time.perf_counter() - epoch_start, 3),
                }
            )
        self._sync_buffers()
        if self.progress:
            self.progress(name, epochs, epochs, describe(context) if describe else "")
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - start

    @torch.no_grad()
    def clean_probs(self, index: torch.Tensor) -> torch.Tensor:
        """Softmax of the samples at ``index`` without augmentation: ``(B, K)``, or ``(M, B, K)``
        for several networks.

        Batch-norm uses the batch's own statistics (as in the training forward) and its running
        statistics are left untouched: early in training, or with few batches per epoch, the
        running statistics are far from the model's and eval-mode outputs are near uniform.
        """
        with _batch_norm_momentum(self.model, 0.0), self.autocast():  # running = 1 * running + 0 * batch
            return torch.softmax(self.model(self.normalize(self._gather(index))).float(), dim=-1)

    @torch.no_grad()
    def recompute_batch_norm(self) -> None:
        """Replace every batch-norm layer's running statistics by their exact average over the
        training images without augmentation (one pass, shuffled batches of ``batch_size``, the
        order drawn from the shared generator so every rank of a data-parallel run gets the
        same statistics).

        What eval-mode predictions (the saved model, the anchor estimator) use. PMNAR needs it:
        after 240 epochs its exponential running averages no longer match its own activations
        (eval-mode accuracy 61% against 88-89% with batch statistics on the sample data,
        docs/methods.md).
        """
        norms = _batch_norms(self.model)
        if not norms or self.data.is_features:
            return
        for m in norms:
            m.reset_running_stats()
        self.model.train()
        order = torch.randperm(len(self.data), generator=self.order_generator)
        # momentum None: a cumulative average over the batches of this pass.
        with _batch_norm_momentum(self.model, None), self.compute_threads():
            for index in order.split(self.config.batch_size):
                with self.autocast():
                    self.model(self.normalize(self._gather(index.to(self.device))))

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
        images = self.images if own else images
        self.model.eval()
        out = torch.zeros(len(images), self.data.num_classes)
        captured: list[torch.Tensor] = []
        hook = None
        if features:
            network = self.model.networks[0] if isinstance(self.model, Ensemble) else self.model
            last = [m for m in network.modules() if isinstance(m, nn.Linear)][-1]
            hook = last.register_forward_pre_hook(
                lambda _, args: captured.append(args[0].detach().float().cpu())
            )
        share = torch.arange(len(images)).tensor_split(self.world)[self.rank]
        rows = []
        try:
            for index in share.split(512):
                batch = self._gather(index) if own else images[index].to(self.device)
                x = self.normalize(batch)
                with self.autocast():
                    p = _mean_softmax(self.model(x).float())
                    if features:
                        rows.append((index, captured.pop()))  # the un-flipped view's activations
                    if flip_average:
                        p = (p + _mean_softmax(self.model(x.flip(3)).float())) / 2
                        captured.clear()
                out[index] = p.cpu()
        finally:
            if hook is not None:
                hook.remove()
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
        if self.data.is_features:
            return {
                "input": "embeddings",
                "dim": int(self.data.channels),
                "channels": int(self.data.channels),
                "mean": [float(v) for v in self.data.mean],
                "std": [float(v) for v in self.data.std],
                "image_size": 0,
                "flip_average": False,
            }
        return {
            "image_size": int(self.data.images.shape[-1]),
            "channels": int(self.data.channels),
            "mean": [float(v) for v in self.data.mean],
            "std": [float(v) for v in self.data.std],
            "resize": "shorter side to image_size, centre crop",
            "flip_average": bool(self.config.flip),  # predictions average the horizontally flipped view
        }


def learning_rate(base: float, epoch: int, epochs: int, schedule: str) -> float:
    """Learning rate of ``epoch`` (0-based) in a phase of ``epochs``.

    ``constant``: ``base`` throughout. ``cosine``: half a cosine from ``base`` down to ``base / 20``
    at the last epoch. ``step``: ``base``, divided by 10 at 40% and again at 80% of the phase (the
    shape of the PMNAR paper's 120/240-of-300 schedule).
    """
    if schedule == "constant":
        return base
    if schedule == "step":
        return base * (0.1 ** ((epoch >= 0.4 * epochs) + (epoch >= 0.8 * epochs)))
    if schedule == "cosine":
        progress = epoch / max(epochs - 1, 1)
        floor = base / 20
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ConfigError(f"schedule must be 'constant', 'cosine' or 'step'; got {schedule!r}")


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


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@contextmanager
def _batch_norm_momentum(model: nn.Module, momentum: float | None):
    """Run the block with every batch-norm layer's ``momentum`` set to ``momentum``, then restore
    each layer's own (0.0 leaves the running statistics untouched, None averages cumulatively)."""
    norms = _batch_norms(model)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = momentum
    try:
        yield
    finally:
        for m, value in zip(norms, saved):
            m.momentum = value


def _mean_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes; ``(M, B, K)`` logits of several networks give their mean ``(B, K)``."""
    probs = torch.softmax(logits, dim=-1)
    return probs.mean(dim=0) if probs.dim() == 3 else probs


def _to_device(context, device):
    if isinstance(context, torch.Tensor):
        return context.to(device)
    if isinstance(context, tuple):
        return tuple(_to_device(c, device) for c in context)
    return context


def masked_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum(w * loss) / max(sum(w), eps)`` and the number of samples with ``w > 0``.

    Never NaN, also when every sample of the batch is masked out (``ignore_index`` would be).
    """
    total = weights.sum()
    return (per_sample * weights).sum() / total.clamp_min(1e-12), (weights > 0).sum()


#: The largest training budget: a thousand times the default schedule (``--budget 1e300`` would
#: be accepted as finite and train for ever).
MAX_BUDGET = 1000


def check_budget(budget: float, option: str = "--budget") -> float:
    """``budget`` (a multiple of the default schedule) when it is a number in ``(0, MAX_BUDGET]``,
    else ConfigError."""
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ConfigError(
            f"{option} must be a finite number > 0 (1 = the default schedule, 0.5 = half of it); "
            f"got {budget!r}"
        )
    if budget > MAX_BUDGET:
        raise ConfigError(
            f"{option} must be in the range (0, {MAX_BUDGET}] (1 = the default schedule, {MAX_BUDGET} = "
            f"{MAX_BUDGET} times as many epochs); got {budget!r}"
        )
    return budget


def scaled_epochs(epochs: tuple[int, ...], scale: float) -> tuple[int, ...]:
    """Multiply a phase schedule by ``scale``, keeping at least one epoch in each non-empty phase."""
    check_budget(scale)
    return tuple(max(1, math.ceil(e * scale - 1e-9)) if e > 0 else 0 for e in epochs)
