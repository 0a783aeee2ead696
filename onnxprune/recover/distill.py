"""The training loop: the dense model teaches, the pruned model's kept weights learn.

Both graphs run in the torch interpreter on the same (augmented) calibration samples. The loss is
the scale-robust distance of every float output (loss.py) plus, inside the graphs (matching.py),
the distance of the cut activations on the channels the pruned model kept and of the outputs of
layers that lost input channels only: many more targets per sample than the outputs alone, which
keeps a few samples from being fitted by features the dense model does not have.

Step sizes are relative: each weight's learning rate is `lr` times its own RMS (Adam's steps have
the size of the learning rate whatever the gradient's scale), with a cosine decay over the run,
and a step that does not lower the loss of its own samples is undone (`_Training`). The loss on the
un-augmented calibration samples is measured before and after; if training did not lower it, the
weights are left as they were. Seeds are fixed: the same data and settings give the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import torch

from ..io.model import Model
from ..report import progress
from .augment import augment
from .batches import Samples
from .cuts import Cuts
from .interpreter import GraphModule, unsupported_ops
from .loss import ScaleStats, TensorLoss
from .matching import Teacher, matching_points
from .settings import DEFAULT_STEPS, RecoverSettings
from .writeback import choose_trainable, write_back

CURVE_POINTS = 50  # loss curve entries kept for the report


def _device(settings: RecoverSettings) -> torch.device:
    if settings.device:
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _losses(teacher: Teacher, student: GraphModule, samples: Samples, points: list[str],
            device: torch.device) -> tuple[dict[str, TensorLoss], list[str]]:
    """A loss per output and per intermediate point with equal shapes in both models."""
    stats = {name: ScaleStats(name) for name in [*teacher.output_names, *points]}
    kept_points = list(points)
    with torch.no_grad():
        for index, feed in enumerate(samples.batches(samples.order(), device)):
            want = teacher(feed, keep=kept_points)
            if index == 0:  # the shapes of both models, once
                got = student(feed, keep=kept_points)
                kept_points = [name for name in kept_points if got[name].shape == want[name].shape]
            for name in [*teacher.output_names, *kept_points]:
                value = want[name]  # ids and masks stay integers, so ScaleStats can leave them out
                stats[name].add((value.float() if value.is_floating_point() else value).cpu().numpy())
    losses = {name: stats[name].loss() for name in [*teacher.output_names, *kept_points]}
    losses = {name: loss.to(device) for name, loss in losses.items() if loss is not None}
    return losses, [name for name in kept_points if name in losses]


def _objective(want: dict, got: dict, losses: dict[str, TensorLoss], outputs: list[str], points: list[str],
               weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(training objective, output part)."""
    output_terms = [losses[name](got[name], want[name]) for name in outputs if name in losses]
    output_loss = torch.stack(output_terms).mean()
    if not points or weight == 0:
        return output_loss, output_loss
    inner = torch.stack([losses[name](got[name], want[name]) for name in points]).mean()
    return output_loss + weight * inner, output_loss


def _evaluate(teacher: Teacher, student: GraphModule, samples: Samples, losses, points, settings,
              device) -> tuple[float, float]:
    """(objective, output part) over the un-augmented calibration samples."""
    total = output = 0.0
    batches = 0
    with torch.no_grad():
        for feed in samples.batches(samples.order(), device):
            want, got = teacher(feed, keep=points), student(feed, keep=points)
            objective, part = _objective(want, got, losses, teacher.output_names, points,
                                         settings.intermediate_weight)
            total, output, batches = total + float(objective), output + float(part), batches + 1
    return total / max(batches, 1), output / max(batches, 1)


def _optimizer(weights: dict[str, torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    scales = {name: float(p.detach().float().pow(2).mean().sqrt()) for name, p in weights.items()}
    typical = float(np.median([s for s in scales.values() if s > 0] or [1.0]))
    # A zero-initialized bias (compensation's slots) moves at a tenth of a typical weight's pace.
    groups = [{"params": [p], "lr": lr * max(scales[name], 0.1 * typical)} for name, p in weights.items()]
    for group in groups:
        group["base_lr"] = group["lr"]
    return torch.optim.Adam(groups, betas=(0.9, 0.99))


class _Training:
    """The loop's state: one step is forward and backward on a few augmented samples, an Adam step,
    and a check on the same samples that the step lowered their loss. A step that raised it is undone
    and the step size halved (real exports have directions of huge curvature: moving every element
    of one 1x1 kernel by 0.2% of its RMS multiplied a recognizer's loss by 500); accepted steps let
    the size grow back. The cost is one forward pass without gradients per step."""

    def __init__(self, teacher: Teacher, student: GraphModule, samples: Samples, losses: dict, outputs: list[str],
                 points: list[str], settings: RecoverSettings, device: torch.device):
        self.teacher, self.student, self.samples = teacher, student, samples
        self.losses, self.outputs, self.points, self.settings, self.device = losses, outputs, points, settings, device
        self.weights = student.named_weights()
        self.optimizer = _optimizer(self.weights, settings.lr)
        self.masks = {name: p != 0 for name, p in self.weights.items()
                      if settings.keep_zeros and p.dim() >= 2 and bool((p == 0).any())}
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.trust = 1.0
        self.rejected = 0

    def _objective(self, want: dict, got: dict) -> torch.Tensor:
        return _objective(want, got, self.losses, self.outputs, self.points, self.settings.intermediate_weight)[0]

    def step(self, schedule: float) -> float:
        """One step at `schedule` (0..1) of the learning rate; returns the loss before it (NaN: skipped)."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * schedule * self.trust
        self.optimizer.zero_grad(set_to_none=True)
        batches, value = [], 0.0
        for chunk, share in self.samples.step_chunks(self.generator):
            feed = self.samples.batch(chunk, self.device)
            if self.settings.augment:
                feed = augment(feed, self.generator, self.samples.partner(chunk, self.generator, self.device))
            with torch.no_grad():
                want = self.teacher(feed, keep=self.points)
            objective = self._objective(want, self.student(feed, keep=self.points))
            if not torch.isfinite(objective):
                return math.nan
            (objective * share).backward()
            value += float(objective.detach()) * share
            batches.append((feed, want, share))
        torch.nn.utils.clip_grad_norm_(list(self.weights.values()), max_norm=10.0)
        for name, mask in self.masks.items():
            self.weights[name].grad.mul_(mask)
        saved = {name: p.detach().clone() for name, p in self.weights.items()}
        self.optimizer.step()
        with torch.no_grad():
            for name, mask in self.masks.items():
                self.weights[name].mul_(mask)
            after = sum(float(self._objective(want, self.student(feed, keep=self.points))) * share
                        for feed, want, share in batches)
            if not after <= value:
                for name, p in self.weights.items():
                    p.copy_(saved[name])
                self.trust *= 0.5
                self.rejected += 1
            else:
                self.trust = min(1.0, self.trust * 1.25)
        return value


def recover(student: Model, teacher: Model, feeds: list[dict[str, np.ndarray]], settings: RecoverSettings,
            log: Callable[[str], None] = lambda message: None, cuts: Cuts | None = None) -> dict:
    """Train `student`'s kept weights towards `teacher` on `feeds` and write them back into `student`.
    `cuts`: the channels of the teacher's tensors the student kept (compared inside the graphs).

    Returns the report entry: steps, samples, wall time, loss curve, what was trained and frozen.
    """
    started = time.perf_counter()
    device = _device(settings)
    torch.manual_seed(settings.seed)
    untracked = unsupported_ops(student)
    names, frozen = choose_trainable(student, untracked)
    teacher_net = GraphModule(teacher).to(device).eval()
    student_net = GraphModule(student, names).to(device).eval()
    weights = student_net.named_weights()
    report = {"device": str(device), "trainable_weights": len(weights),
              "trainable_parameters": int(sum(p.numel() for p in weights.values())),
              "frozen": dict(frozen), "run_without_gradients": sorted(untracked)}
    if not weights:
        return {**report, "skipped": "no weight can be trained", "steps": 0}
    samples = Samples(feeds, teacher_net, settings.batch, device)
    teacher_net = Teacher(teacher_net, cuts, device)
    losses, points = _losses(teacher_net, student_net, samples, matching_points(teacher, student, cuts), device)
    outputs = [name for name in teacher_net.output_names if name in losses]
    if not outputs:
        return {**report, "skipped": "no float output to compare", "steps": 0}
    before = _evaluate(teacher_net, student_net, samples, losses, points, settings, device)
    training = _Training(teacher_net, student_net, samples, losses, outputs, points, settings, device)
    steps = settings.steps if settings.steps is not None else (None if settings.seconds else DEFAULT_STEPS)
    curve, skipped = [], 0
    loop_start = time.perf_counter()
    with progress.bar(log, "recover", total=steps, unit="step") as bar:
        for step in range(1, (steps or 10**9) + 1):
            elapsed = time.perf_counter() - loop_start
            if settings.seconds is not None and elapsed >= settings.seconds:
                break
            done = min(1.0, max(step / steps if steps else 0.0,
                                elapsed / settings.seconds if settings.seconds else 0.0))
            value = training.step(0.5 * (1 + math.cos(math.pi * done)))  # cosine decay
            bar.update()
            if not math.isfinite(value):
                skipped += 1
                if skipped > 10:
                    break
                continue
            curve.append((step, value))
            bar.set_postfix_str(f"loss {value:.4g}")
    after = _evaluate(teacher_net, student_net, samples, losses, points, settings, device)
    reverted = not after[0] < before[0]
    if not reverted:
        write_back(student, {name: p.detach().float().cpu().numpy() for name, p in weights.items()})
    stride = max(1, len(curve) // CURVE_POINTS)
    points_kept = curve[::stride] + ([curve[-1]] if curve and (len(curve) - 1) % stride else [])
    return {
        **report, "steps": len(curve), "rejected_steps": training.rejected, "skipped_steps": skipped,
        "samples": samples.count, "batch": settings.batch, "augmented": settings.augment, "lr": settings.lr,
        "seed": settings.seed, "matched_tensors": len(points),
        "loss_before": round(before[0], 6), "loss_after": round(after[0], 6),
        "output_loss_before": round(before[1], 6), "output_loss_after": round(after[1], 6),
        "reverted": reverted, "seconds": round(time.perf_counter() - started, 3),
        "curve": [[s, round(v, 6)] for s, v in points_kept],
    }
