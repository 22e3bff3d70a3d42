"""What decides a scan (:class:`ScanConfig`, saved as ``config.json``) and what it produced
(:class:`ScanResult`): the types :mod:`labelaudit.pipeline.scan` and
:mod:`labelaudit.pipeline.scan_outputs` share."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from ..audit.flags import Audit
from ..audit.similarity import SimilarityIssues
from ..data.images import ImageStore
from ..data.sources import SampleTable
from ..errors import ConfigError
from ..train import distributed
from ..train.methods.baselines import BASELINES, BaselineConfig
from ..train.methods.cross_fit import CrossFitConfig
from ..train.methods.nlnl import NLNLConfig
from ..train.methods.pmnar import PMNARConfig
from ..train.trainer import TrainConfig, Trainer

METHODS = ("auto", "nlnl", "pmnar", *BASELINES, "cv-ce", "cv-gce")
#: What ``method="auto"`` runs, by input kind: on embeddings cross-fitted linear heads (cv-gce)
#: beat a single head on human-like and asymmetric noise (docs/calibration.md), on pixels NLNL
#: does (docs/methods.md).
AUTO_METHOD = {
    "images": "nlnl",
    "embeddings": "cv-gce",
    "embeddings-file": "cv-gce",
    "probs-file": "given-probs",
}


@dataclass(frozen=True)
class ScanConfig:
    """Everything that decides a scan's result; saved as the run's ``config.json``."""

    method: str = "auto"  # auto: nlnl on images, cv-gce on embeddings (AUTO_METHOD)
    image_size: Optional[int] = None  # None: median shorter side clamped to 16..64
    epochs_scale: float = 1.0  # multiplies every phase's epochs
    # None: the learned boundary (docs/methods.md); else flag p(given) < threshold
    threshold: Optional[float] = None
    # near-duplicates and outliers: None or True = searched, False = not
    similarity: Optional[bool] = None
    # pixel similarity for near-duplicates; None: read from the data
    duplicate_threshold: Optional[float] = None
    train: TrainConfig = field(default_factory=TrainConfig)
    nlnl: NLNLConfig = field(default_factory=NLNLConfig)
    pmnar: PMNARConfig = field(default_factory=PMNARConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    cross_fit: CrossFitConfig = field(default_factory=CrossFitConfig)

    def validate(self) -> "ScanConfig":
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {list(METHODS)}; got {self.method!r}")
        from ..audit.flags import require_cleanlab
        from ..train.schedule import check_budget

        check_budget(self.epochs_scale)  # finite and > 0: inf would train forever
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ConfigError(f"threshold must be in (0, 1); got {self.threshold!r}")
        if self.duplicate_threshold is not None and not 0 < self.duplicate_threshold <= 1:
            raise ConfigError(f"duplicate threshold must be in (0, 1]; got {self.duplicate_threshold!r}")
        self.train.validate()
        self.pmnar.validate()
        self.baseline.validate()
        self.cross_fit.validate()
        if self.method == "cv-ce" and self.baseline.flagger == "cleanlab" and self.threshold is None:
            require_cleanlab()  # before any training, not after five fold models
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScanResult:
    """What a scan produced: the data, the trained model, the audit and its timings.

    ``store`` is None when the scan read no images (``--embeddings``/``--probs`` files) and
    ``trainer`` is None when it trained nothing (``--probs``). ``inputs`` says what the network
    learnt from (:mod:`labelaudit.train.inputs`).
    """

    table: SampleTable
    store: Optional[ImageStore]
    config: ScanConfig
    trainer: Optional[Trainer]
    audit: Audit
    seconds: dict[str, float]
    truth: Optional[dict] = None
    anchor_transition_matrix: Optional[np.ndarray] = None  # (K, K) from the final model, no augmentation
    noise_rate_interval: tuple[float, float] = (float("nan"), float("nan"))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # in summary.json and model.pt
    distributed: dict = field(default_factory=distributed.description)  # world_size and backend, at scan time
    inputs: dict = field(default_factory=lambda: {"kind": "images"})
    similarity: Optional[SimilarityIssues] = None  # near-duplicates and outliers; None when not searched
    similarity_skipped: Optional[str] = None  # why they were not searched
    cross_fit: Optional[dict] = None  # the cross-fitted heads' chosen weight decay (CrossFit.summary)


# --probs trains nothing
