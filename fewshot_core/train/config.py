"""Training configuration: one JSON file per run type (configs/*.json; `"base": NAME` continues another
recipe with a few values changed), overridable from the command line."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class TrainConfig:
    name: str = "run"
    resolution: int = 128
    structure: str = "landmarks"  # "parser": train on MediaPipe-rendered class maps (the parser distils the same)
    generator: dict[str, Any] = field(default_factory=dict)  # GeneratorConfig overrides
    datasets: list[str] = field(default_factory=lambda: ["lfw", "celeba299", "utkface"])
    max_images: int | None = None
    # Draw weights by identity prefix ("lfw", "celeba", "utkface"): {"utkface": 2.5} draws UTKFace 2.5x as often.
    dataset_weights: dict[str, float] = field(default_factory=dict)
    batch_size: int = 8
    steps: int = 1000
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.99)
    seed: int = 0
    device: str = "auto"
    threads: int = 2
    bf16: bool = True  # bf16 autocast (CUDA, and CPUs with AVX-512 BF16 / AMX)
    # The first half of each batch reconstructs the source, the second half takes another identity.
    cross_fraction: float = 0.5
    mix_prob: float = 0.3  # cross targets mixed from two identities with Beta(mix_beta, mix_beta)
    mix_beta: float = 0.3
    own_embedding_prob: float = 0.5  # reconstruction conditioned on the photo's own embedding vs the identity mean
    # loss weights
    w_l1: float = 10.0
    w_perceptual: float = 2.0
    w_id: float = 5.0
    w_mask: float = 1.0
    w_adv: float = 1.0
    w_fm: float = 5.0
    w_cycle: float = 0.0
    w_struct: float = 0.0  # cross outputs must parse (frozen shipped parser) like their source's class map
    struct_balance: float = 0.0  # class weights (freq/median)^-p in that loss: small parts (brows, nose) count more
    # Cross outputs must put dlib's 68 points (as the frozen landmark judge places them) where the source has
    # them, after a similarity fit: the expression figure's own formula, made differentiable.
    w_landmarks: float = 0.0
    landmark_judge: str | None = None  # judge file; None: `landmark_judge.default_judge_path(resolution)`
    # More judges (files), trained apart: the loss averages over all of them. A pattern that moves one judge's
    # points without moving the geometry rarely moves a second judge's the same way; geometry moves them all.
    landmark_judges_extra: list[str] = field(default_factory=list)
    # Show the judge source and output through a 3x3 low-pass, so the landmark loss moves geometry, not texture.
    landmark_lowpass: bool = False
    # Show the judge source and output through the same random small similarity (shift, scale, rotation) each
    # step: a change that moves the judge's points under every such view is geometry, not an adversarial pattern.
    landmark_jitter: bool = False
    adv_start: int = 0  # step at which adversarial losses switch on
    # The first N steps train the discriminator alone (generator frozen): a fine-tune from an exported generator
    # starts with a fresh discriminator, whose early, uninformed gradients would otherwise reach the generator.
    d_warmup_steps: int = 0
    # Decay of an exponential moving average of the generator's weights (0: off). When on, the average is what
    # samples and exports use: Adam without momentum (betas[0] = 0) leaves the raw weights noisy step to step.
    g_ema: float = 0.0
    # Generator module paths that keep their starting values (e.g. ["up.4", "head"]: the 128 px decoder level).
    # A fine-tune that should move geometry but not the rendered texture leaves the finest level alone; frozen
    # parameters get no gradient and no optimiser state. A run must resume with the list it started with.
    freeze_generator: list[str] = field(default_factory=list)
    disc_scales: int = 2
    # Average the adversarial losses over the face region only: outside it the composite is the real crop, so
    # those patches are identical in real and fake and only dilute what the discriminator learns.
    disc_face_only: bool = False
    disc_channels: int = 48
    log_every: int = 10
    sample_every: int = 200
    checkpoint_every: int = 200
    export_latest: bool = False  # also write run_dir/generator_latest.safetensors (fp16) at each checkpoint

    @classmethod
    def load(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        path = Path(path)
        if not path.is_file() and (CONFIG_DIR / f"{path.name}.json").is_file():
            path = CONFIG_DIR / f"{path.name}.json"
        data = json.loads(path.read_text())
        base = data.pop("base", None)  # a recipe that continues another: its values, then these
        if base is not None:
            data = {**cls.load(base).to_dict(), "name": path.stem, **data}
        data.update(overrides or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown training config keys {unknown}")
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
