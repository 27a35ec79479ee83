"""The generator trainer: self-reconstruction, cross-identity, cycle and adversarial objectives.

Each batch is split: the first part reconstructs its own (heavily degraded)
source from its own identity, the rest is conditioned on another identity (or a
Beta mixture of two) and must carry that identity while keeping the source's
structure map.

Image losses see `face * rgb + (1 - face) * source`, with `face` the structure
map's face region, never the predicted mask: with the predicted mask, every
reconstruction loss is minimised by a mask of 0 (the composite is then the real
photo), and the mask collapsed that way in the first CPU run. The predicted
mask learns the face region on its own (BCE), and is what paste-back uses.
"""
from __future__ import annotations

import copy
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..embed import FaceEmbedder
from ..errors import WeightsMismatchError
from ..generator import FewShotGenerator, GeneratorConfig, load_generator, save_generator
from ..generator.degrade import random_degrade
from ..imageio import save_image
from ..models import require_part
from ..models.download import sha256_of
from ..paths import cache_root
from ..parsing.classes import PARSE_CLASSES
from ..parsing.mapper import default_parser_path
from ..parsing.network import load_parser
from ..structure import LandmarkStructureMapper
from ..structure_preview import colorize_structure
from .checkpoint import load_checkpoint, save_checkpoint, saved_module_names
from .config import TrainConfig
from .data import Batch, PreparedFaces, soft_class_maps
from .discriminator import MultiScaleDiscriminator
from .precision import cpu_bf16_supported
from .landmark_judge import blur3, default_judge_path, judge_path, load_judge, paired_jitter, similarity_aligned_error
from .losses import (facenet_features, feature_matching_loss, hinge_d_loss, hinge_g_loss, identity_loss,
                     perceptual_loss, structure_loss)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LabelStructure:
    """Stands in for the parser during training: the MediaPipe-rendered maps it is distilled from."""

    name = "parser"
    channels = PARSE_CLASSES


def run_dir_for(name: str) -> Path:
    return cache_root() / "runs" / name


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def trainable_parameters(model: torch.nn.Module, frozen_prefixes: list[str]) -> list[torch.nn.Parameter]:
    """The parameters an optimiser should train: all but those under `frozen_prefixes` (which are switched to
    requires_grad False, so no gradient is kept for them). A prefix that names no parameter is a typo: refused."""
    named = list(model.named_parameters())
    for prefix in frozen_prefixes:
        if not any(_under(name, prefix) for name, _ in named):
            tops = sorted({name.split(".")[0] for name, _ in named})
            raise ValueError(f"freeze_generator: {prefix!r} names no generator parameter; "
                             f"give module paths such as 'up.4' or 'head' (top-level modules: {tops})")
    trainable = []
    for name, param in named:
        frozen = any(_under(name, prefix) for prefix in frozen_prefixes)
        param.requires_grad_(not frozen)
        if not frozen:
            trainable.append(param)
    if not trainable:
        raise ValueError("freeze_generator freezes every generator parameter; nothing would train")
    return trainable


class Trainer:
    def __init__(self, cfg: TrainConfig, data_dir: Path, run_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.device = pick_device(cfg.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.threads)
        else:  # fixed input shapes: let cuDNN pick its fastest kernels once
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.torch_rng = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.run_dir = run_dir or run_dir_for(cfg.name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data = PreparedFaces(data_dir, "train", tuple(cfg.datasets), cfg.max_images, cfg.seed,
                                  with_labels=cfg.structure == "parser")
        if self.data.resolution != cfg.resolution:
            raise ValueError(f"prepared data is {self.data.resolution} px but the config asks for {cfg.resolution}")
        self.sample_p = self.data.sampling_probabilities(cfg.dataset_weights)
        self.mapper = LabelStructure() if cfg.structure == "parser" else LandmarkStructureMapper()
        self.gen_config = GeneratorConfig.for_mapper(self.mapper, resolution=cfg.resolution, **cfg.generator)
        self.generator = FewShotGenerator(self.gen_config).to(self.device).train()
        self.generator_ema: FewShotGenerator | None = None
        if cfg.g_ema > 0:
            self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)
        self.discriminator = MultiScaleDiscriminator(cfg.disc_scales, cfg.disc_channels).to(self.device).train()
        self.embedder = FaceEmbedder.from_file(require_part("facenet"), device=self.device)
        self.parser = None
        if cfg.w_struct > 0:  # frozen judge of the cross outputs' structure (gradients flow to its input only)
            self.parser = load_parser(default_parser_path(), self.device).eval().requires_grad_(False)
        self.judges: list = []
        if cfg.w_landmarks > 0:  # frozen, like the parser: gradients flow to the cross outputs only
            paths = [judge_path(cfg.landmark_judge) if cfg.landmark_judge else default_judge_path(cfg.resolution),
                     *map(judge_path, cfg.landmark_judges_extra)]
            self.judges = [load_judge(path, self.device) for path in paths]
        self.judge = self.judges[0] if self.judges else None
        self.opt_g = torch.optim.Adam(trainable_parameters(self.generator, cfg.freeze_generator), lr=cfg.lr_g,
                                      betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr_d, betas=cfg.betas)
        self.step = 0
        self.images_seen = 0
        # The exported generator this run started from, if any: its path, sha256 and its own run record, so an
        # export's metadata carries its whole lineage (kept in the checkpoint across resumes).
        self.init_from: dict[str, Any] = {}
        self.seconds = 0.0
        checkpoint = self.run_dir / "checkpoint"
        if (checkpoint / "state.json").is_file():
            saved = json.loads((checkpoint / "state.json").read_text())["state"].get("config", {})
            if saved.get("freeze_generator", []) != cfg.freeze_generator:  # the optimiser's state would not fit
                raise ValueError(f"{checkpoint} was trained with freeze_generator {saved.get('freeze_generator', [])}"
                                 f" but this config freezes {cfg.freeze_generator}; resume with the same list, "
                                 "or start a new --run-dir")
            modules = self._modules()
            starts_average = "generator_ema" in modules and "generator_ema" not in saved_module_names(checkpoint)
            if starts_average:  # a run that switches the average on part-way: it starts at the resumed weights
                del modules["generator_ema"]
            state = load_checkpoint(checkpoint, modules, self._optimizers())
            if starts_average:
                self.generator_ema.load_state_dict(self.generator.state_dict())
            self.step, self.images_seen, self.seconds = state["step"], state["images_seen"], state["seconds"]
            self.init_from = state.get("init_from", {})
            self.rng = np.random.default_rng([cfg.seed, self.step])
            self.torch_rng.manual_seed(cfg.seed * 1_000_003 + self.step)
        self.sample_index = np.random.default_rng(cfg.seed + 1).choice(len(self.data), 6, replace=False)
        self.sample_targets = np.random.default_rng(cfg.seed + 2).choice(len(self.data), 6, replace=False)
        self.autocast = cfg.bf16 and (self.device.type == "cuda" or cpu_bf16_supported())

    def init_generator_from(self, path: Path) -> None:
        """Start a fresh run from an exported generator (e.g. the shipped fp16 file); optimizers start anew.

        Why: a GPU slot cannot carry a full checkpoint (Adam state included) beside its data, but an fp16
        export fits, so a later slot continues from the export instead of from scratch.
        """
        if self.step > 0:
            raise ValueError(f"{self.run_dir} already holds a checkpoint at step {self.step}; it resumes from that, "
                             "so --init-generator is not needed (or use another --run-dir)")
        source = load_generator(path, device=self.device)
        changed = self.gen_config.architecture_changes(source.config)
        if changed:
            raise WeightsMismatchError(f"{path} was built with other generator settings ({changed}) than this run")
        self.generator.load_state_dict(source.state_dict())
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(source.state_dict())
        self.init_from = {"init_from": str(path), "init_sha256": sha256_of(Path(path)),
                          "init_run": source.config.extra}

    def _modules(self) -> dict[str, torch.nn.Module]:
        modules = {"generator": self.generator, "discriminator": self.discriminator}
        if self.generator_ema is not None:
            modules["generator_ema"] = self.generator_ema
        return modules

    @property
    def shipped_generator(self) -> FewShotGenerator:
        """What samples and exports use: the weight average when the run keeps one."""
        return self.generator_ema if self.generator_ema is not None else self.generator

    @torch.no_grad()
    def update_average(self) -> None:
        """Move the weight average a step (1 - g_ema) towards the weights the optimiser just wrote."""
        if self.generator_ema is None:
            return
        averaged = list(self.generator_ema.parameters())
        torch._foreach_lerp_(averaged, [p.detach() for p in self.generator.parameters()], 1.0 - self.cfg.g_ema)
        for mine, theirs in zip(self.generator_ema.buffers(), self.generator.buffers()):
            mine.copy_(theirs)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.opt_g, "discriminator": self.opt_d}

    # ------------------------------------------------------------- conditioning
    def draw(self, count: int) -> np.ndarray:
        """Crop indices for a batch or for cross targets, weighted by `dataset_weights` when set."""
        return self.rng.choice(len(self.data), count, p=self.sample_p)

    def cross_codes(self, identity_index: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """Embeddings of other identities (or Beta mixtures of two) for the cross part of a batch."""
        count = identity_index.shape[0]
        others = self.draw(count)
        for i in range(count):  # resample the rare pick of the same identity
            while self.data.identity[others[i]] == int(identity_index[i]):
                others[i] = self.draw(1)[0]
        means = torch.from_numpy(self.data.identity_means[self.data.identity[others]])
        own = F.normalize(torch.from_numpy(self.data.embeddings[others]), dim=1)
        use_own = torch.from_numpy(self.rng.random(count) < self.cfg.own_embedding_prob)[:, None]
        codes = torch.where(use_own, own, means)
        mix = self.rng.random(count) < self.cfg.mix_prob
        if mix.any():
            partners = torch.from_numpy(self.data.identity_means[self.data.identity[self.draw(int(mix.sum()))]])
            alpha = torch.from_numpy(self.rng.beta(self.cfg.mix_beta, self.cfg.mix_beta, int(mix.sum()))).float()
            mixed = F.normalize(alpha[:, None] * codes[mix] + (1 - alpha[:, None]) * partners, dim=1)
            codes[torch.from_numpy(mix)] = mixed
        return codes.to(self.device), others

    def structure(self, batch: Batch) -> torch.Tensor:
        if batch.class_maps is not None:
            return soft_class_maps(batch.class_maps, len(self.mapper.channels))
        return self.mapper(batch.crops, batch.landmarks)

    def generate(self, crops: torch.Tensor, structure: torch.Tensor, codes: torch.Tensor, degrade: bool = True):
        source = random_degrade(crops, self.torch_rng) if degrade else crops
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            rgb, mask = self.generator(source, structure, codes)
        return rgb.float(), mask.float()

    @staticmethod
    def blend(rgb: torch.Tensor, crops: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        """The generated face inside the structure's face region, the real crop outside it."""
        face = 1 - structure[:, :1]
        return face * rgb + (1 - face) * crops

    # --------------------------------------------------------------------- step
    def batch_codes(self, batch: Batch) -> tuple[int, torch.Tensor, torch.Tensor]:
        """How many rows reconstruct (the first), their codes (own embedding or identity mean), the cross codes."""
        n_rec = batch.crops.shape[0] - int(round(batch.crops.shape[0] * self.cfg.cross_fraction))
        use_own = torch.from_numpy(self.rng.random(n_rec) < self.cfg.own_embedding_prob).to(self.device)[:, None]
        rec_codes = torch.where(use_own, batch.own_embedding[:n_rec], batch.identity_mean[:n_rec])
        cross_codes, _ = self.cross_codes(batch.identity_index[n_rec:])
        return n_rec, rec_codes, cross_codes

    def adversarial_weight(self, structure: torch.Tensor) -> torch.Tensor | None:
        """Per-pixel weight of the adversarial losses: the face region with `disc_face_only`, else uniform."""
        return (1 - structure[:, :1]) if self.cfg.disc_face_only else None

    def discriminator_step(self, x: torch.Tensor, comp: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        """One hinge update of the discriminator: real crops against composited outputs (detached)."""
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            real_logits = [o[0].float() for o in self.discriminator(x)]
            fake_logits = [o[0].float() for o in self.discriminator(comp.detach())]
        d_loss = hinge_d_loss(real_logits, fake_logits, self.adversarial_weight(structure))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        return d_loss.detach()

    def discriminator_warmup_step(self, batch: Batch) -> dict[str, float]:
        """A step of `d_warmup_steps`: the frozen generator's cross swaps and reconstructions feed D only."""
        x = batch.crops
        _, rec_codes, cross_codes = self.batch_codes(batch)
        codes = torch.cat([rec_codes, cross_codes])
        structure = self.structure(batch)
        with torch.no_grad():
            rgb, _ = self.generate(x, structure, codes)
        return {"adv_d": float(self.discriminator_step(x, self.blend(rgb, x, structure), structure))}

    def train_step(self, batch: Batch) -> dict[str, float]:
        cfg = self.cfg
        if self.step < cfg.d_warmup_steps and cfg.w_adv > 0:
            return self.discriminator_warmup_step(batch)
        x, lm = batch.crops, batch.landmarks
        n_rec, rec_codes, cross_codes = self.batch_codes(batch)
        n_cross = x.shape[0] - n_rec
        codes = torch.cat([rec_codes, cross_codes])
        id_targets = torch.cat([batch.own_embedding[:n_rec], cross_codes])

        structure = self.structure(batch)
        rgb, mask = self.generate(x, structure, codes)
        comp = self.blend(rgb, x, structure)
        face = 1 - structure[:, :1]
        use_adv = self.step >= cfg.adv_start and cfg.w_adv > 0
        losses: dict[str, torch.Tensor] = {}
        losses["l1"] = ((rgb[:n_rec] - x[:n_rec]).abs() * (0.2 + face[:n_rec])).mean()
        losses["mask"] = F.binary_cross_entropy(mask.clamp(1e-4, 1 - 1e-4), face.clamp(0, 1))
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            emb, feats = facenet_features(self.embedder, self.embedder.align(comp, lm))
            with torch.no_grad():
                _, real_feats = facenet_features(self.embedder, self.embedder.align(x[:n_rec], lm[:n_rec]))
        losses["id"] = identity_loss(emb.float(), id_targets)
        losses["id_cross"] = identity_loss(emb[n_rec:].float(), cross_codes).detach()
        losses["perceptual"] = perceptual_loss([f[:n_rec].float() for f in feats], [f.float() for f in real_feats])
        if self.parser is not None and n_cross and batch.class_maps is not None:
            # The cross output must parse like its source: same brows, eye openings, irises, lips.
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
                logits = self.parser(comp[n_rec:])
            losses["struct"] = structure_loss(logits.float(), batch.class_maps[n_rec:], cfg.struct_balance)
        if self.judges and n_cross:
            # dlib-style landmarks of the cross output against the source's own, similarity-aligned; the mean
            # over the judges, each comparing the output with the source as it itself places them.
            source_view, output_view = x[n_rec:], comp[n_rec:]
            if cfg.landmark_jitter:
                source_view, output_view = paired_jitter(source_view, output_view, self.torch_rng)
            if cfg.landmark_lowpass:
                source_view, output_view = blur3(source_view), blur3(output_view)
            errors = []
            for judge in self.judges:
                with torch.no_grad():
                    source_points = judge(source_view)
                with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
                    output_points = judge(output_view)
                errors.append(similarity_aligned_error(output_points.float(), source_points.float()).mean())
            losses["landmarks"] = torch.stack(errors).mean()
        if cfg.w_cycle > 0 and n_cross:
            back, _ = self.generate(comp[n_rec:], structure[n_rec:], batch.own_embedding[n_rec:])
            losses["cycle"] = ((back - x[n_rec:]).abs() * (0.2 + face[n_rec:])).mean()
        if use_adv:
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
                fake_out = self.discriminator(comp)
                with torch.no_grad():
                    real_out = self.discriminator(x[:n_rec])
            losses["adv_g"] = hinge_g_loss([o[0].float() for o in fake_out], self.adversarial_weight(structure))
            losses["fm"] = feature_matching_loss([[f[:n_rec].float() for f in o[1]] for o in fake_out],
                                                 [[f.float() for f in o[1]] for o in real_out])
        weights = {"l1": cfg.w_l1, "mask": cfg.w_mask, "id": cfg.w_id, "perceptual": cfg.w_perceptual,
                   "cycle": cfg.w_cycle, "adv_g": cfg.w_adv, "fm": cfg.w_fm, "struct": cfg.w_struct,
                   "landmarks": cfg.w_landmarks}
        total = sum(weights[k] * v for k, v in losses.items() if k in weights)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        self.update_average()
        if use_adv:
            losses["adv_d"] = self.discriminator_step(x, comp, structure)
        losses["total"] = total.detach()
        return {k: float(v.detach()) for k, v in losses.items()}

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def write_samples(self, path: Path) -> None:
        """Rows: source, degraded input, structure, reconstruction, cross target, cross swap."""
        generator = self.shipped_generator
        was_training = generator.training
        generator.eval()
        batch = self.data.batch(self.sample_index, self.device, np.random.default_rng(0), flip=False)
        target = self.data.batch(self.sample_targets, self.device, np.random.default_rng(0), flip=False)
        structure = self.structure(batch)
        from ..generator import degrade_for_inference

        degraded = degrade_for_inference(batch.crops, self.gen_config)
        rgb, mask = generator(degraded, structure, batch.identity_mean)
        rec = mask * rgb + (1 - mask) * batch.crops
        rgb, mask = generator(degraded, structure, target.identity_mean)
        cross = mask * rgb + (1 - mask) * batch.crops
        rows = [batch.crops, degraded, colorize_structure(structure), rec, target.crops, cross]
        grid = torch.cat([torch.cat(list(r.float().cpu()), dim=-1) for r in rows], dim=-2)
        save_image(grid, path)
        generator.train(was_training)

    def save(self) -> None:
        state = {"step": self.step, "images_seen": self.images_seen, "seconds": self.seconds, "init_from": self.init_from,
                 "config": self.cfg.to_dict(), "generator_config": self.gen_config.to_dict()}
        save_checkpoint(self.run_dir / "checkpoint", self._modules(), self._optimizers(), state)

    def export(self, path: Path, average: bool = True) -> Path:
        """The generator alone, fp16 safetensors, with the run recorded in its config.

        `average=False` writes the raw weights of a run that keeps an average (to compare the two).
        """
        generator = self.shipped_generator if average else self.generator
        config = GeneratorConfig.from_dict({**self.gen_config.to_dict(), "extra": {
            "run": self.cfg.name, "steps": self.step, "images_seen": self.images_seen,
            "hours": round(self.seconds / 3600, 2), "device": str(self.device),
            **({"weights": f"average (g_ema {self.cfg.g_ema})"} if generator is self.generator_ema else {}),
            **self.init_from}})
        generator.config = config
        partial = path.with_name(path.stem + ".partial.safetensors")  # a reader never sees half a file
        save_generator(generator, config, partial)
        partial.replace(path)
        return path

    def train(self, steps: int | None = None, max_minutes: float | None = None) -> dict[str, float]:
        """Train to step `steps` (default: the config's), or until `max_minutes` of wall time have passed.

        Either way the run ends on a checkpoint, so the same command resumes it.
        """
        cfg = self.cfg
        end = steps if steps is not None else cfg.steps
        deadline = time.time() + 60 * max_minutes if max_minutes else None
        log_path = self.run_dir / "losses.csv"
        drop_log_rows_after(log_path, self.step)
        last: dict[str, float] = {}
        fields: list[str] | None = None
        while self.step < end:
            started = time.time()
            index = self.draw(cfg.batch_size)
            batch = self.data.batch(index, self.device, self.rng)
            last = self.train_step(batch)
            self.step += 1
            self.images_seen += cfg.batch_size
            self.seconds += time.time() - started
            if self.step % cfg.log_every == 0 or self.step == end:
                row = {"step": self.step, "images_seen": self.images_seen, "seconds": round(self.seconds, 1), **last}
                if fields is None:
                    fields = ["step", "images_seen", "seconds", "l1", "mask", "id", "id_cross", "perceptual",
                              "struct", "landmarks", "cycle", "adv_g", "fm", "adv_d", "total"]
                new = not log_path.is_file()
                with open(log_path, "a", newline="") as handle:
                    writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            if self.step % cfg.sample_every == 0 or self.step == end:
                self.write_samples(self.run_dir / "samples" / f"step_{self.step:06d}.png")
            out_of_time = deadline is not None and time.time() > deadline
            if self.step % cfg.checkpoint_every == 0 or self.step == end or out_of_time:
                self.save()
                if cfg.export_latest:
                    self.export(self.run_dir / "generator_latest.safetensors")
            if out_of_time:
                print(f"stopped after {max_minutes} min at step {self.step}; rerun to resume", flush=True)
                break
        return last


def drop_log_rows_after(log_path: Path, step: int) -> None:
    """Forget logged rows past `step`: a run stopped between checkpoints redoes those steps on resume,
    and duplicate steps would fold the loss curve back on itself."""
    if not log_path.is_file():
        return
    with open(log_path, newline="") as handle:
        rows = list(csv.reader(handle))
    if len(rows) < 2:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= step]
    if len(kept) == len(rows):
        return
    partial = log_path.with_name(log_path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    partial.replace(log_path)
