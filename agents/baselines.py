"""Full-view baselines: they see the whole canvas, as the hard-attention agents never do.

* :class:`SoftAttention`: a small CNN (three layers, ``_soft_encoder``) turns the canvas into
  a grid of feature vectors; a recurrent core runs ``T`` steps and at each computes a softmax
  over all grid cells from its state, reads the weighted sum of the features (every cell,
  softly) and updates its state; the classifier reads the last state. Trained end to end by
  backpropagation (Xu et al. 2015's soft attention, with the glimpse budget ``T`` of the hard
  agents).
* :class:`FullViewCNN` and :class:`FullViewFC`: the paper's convolutional and fully connected
  baselines, two layers each, on the whole canvas.
* :class:`DeepCNN`: a modern full-view CNN, six convolutions with batch normalisation and a
  global max-pool, the strong baseline a reader of this field expects beside the paper's.

Their learner (:class:`FullViewLearner`) draws canvases from the same task and splits as the
environments (fresh training canvases, fixed validation and test canvases), and trains with the
same :class:`glimpse.agents.trainer.Trainer`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from glimpse.config import check_at_least, check_fields, option
from glimpse.envs.evaluation import TargetShare
from glimpse.envs.glimpse_env import task_of
from glimpse.errors import ConfigError
from glimpse.tasks import Task

BASELINES = ("soft", "cnn", "deep-cnn", "fc")
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class BaselineConfig:
    """Sizes of the full-view baselines, and the arithmetic they train in."""

    hidden_size: int = option(256, "fc: units per layer; soft: units of the recurrent core.")
    conv_channels: int = option(
        16, "cnn, soft, deep-cnn: channels of the first convolution (doubled next; deep-cnn "
        "doubles twice)."
    )
    attention_units: int = option(64, "soft: units of the attention scores' hidden layer.")
    attention_steps: int | None = option(
        None, "soft: attention steps; default: the environment's glimpse budget."
    )
    precision: str = option(
        "float32",
        "the training's arithmetic: float32; bfloat16 (mixed precision: the forward pass "
        "under torch.autocast, so activations in bfloat16; weights, optimiser state, batch "
        "normalisation's statistics and the loss in float32); or auto: bfloat16 where the "
        "device computes it natively (an x86 CPU with AVX-512 BF16 or AMX, an NVIDIA GPU from "
        "Ampere on), float32 elsewhere, decided again at each resume. Evaluation is always "
        "float32.",
        choices=PRECISIONS,
    )

    def __post_init__(self) -> None:
        check_fields(self)
        check_at_least(
            self, 1, "hidden_size", "conv_channels", "attention_units", "attention_steps"
        )


def cpu_has_bfloat16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this x86 CPU computes in bfloat16 natively: it lists the AVX-512 BF16 or AMX
    BF16 instructions (in Linux's ``cpuinfo``; False where that cannot be read, and on ARM,
    whose ``bf16`` feature we have not measured). oneDNN's own test
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is not used: it also answers True on CPUs
    with plain AVX-512, where bfloat16 is emulated.

    Measured at 100 px (docs/comparison.md): on our AMD EPYC, which lists AVX-512 BF16, a
    bfloat16 training step took 1.4 to 2.0 times less time than a float32 one; on our Intel
    Xeon, with AVX-512 but neither, it took 1.3 to 2.4 times more."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def training_precision(requested: str, device: torch.device) -> str:
    """The arithmetic a baseline trains in on ``device``: ``requested``, with ``auto`` made
    bfloat16 where the device computes it natively (a CPU by :func:`cpu_has_bfloat16`, an
    NVIDIA GPU of compute capability 8.0 or more: ``torch.cuda.is_bf16_supported`` also says
    yes where it is emulated) and float32 elsewhere. A rule, not one CPU's preference: bfloat16
    won on the CPU that has the instructions and lost on the one without."""
    if requested != "auto":
        return requested
    if device.type == "cuda":
        native = torch.cuda.get_device_capability(device) >= (8, 0)
    else:
        native = device.type == "cpu" and cpu_has_bfloat16()
    return "bfloat16" if native else "float32"


def _channels_last(encoder: nn.Sequential) -> nn.Sequential:
    """The encoder with channels-last (NHWC) weights, which makes its activations NHWC too:
    oneDNN's convolutions and max-pool run faster that way (when it was written, about twice
    as fast forward and backward at batch 128, on a CPU not recorded; on our Intel Xeon a whole
    training step 1.1 to 1.5 times, ``python benchmarks/train_speed.py --layouts 100``, to be
    measured on the AMD EPYC too). Same function, same ``state_dict`` keys and values."""
    return encoder.to(memory_format=torch.channels_last)


def _encoder(in_channels: int, channels: int) -> nn.Sequential:
    """The CNN baseline's two strided convolutions (5 x 5 then 3 x 3, stride 2 each): a feature
    map at 1/4 of the canvas's resolution, ``2 * channels`` features per cell."""
    return _channels_last(nn.Sequential(
        nn.Conv2d(in_channels, channels, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, stride=2, padding=1), nn.ReLU(),
    ))  # fmt: skip


def _soft_encoder(in_channels: int, channels: int) -> nn.Sequential:
    """Soft attention's feature grid: 5 x 5 stride 2, 3 x 3, 2 x 2 max-pool, 3 x 3; 1/4 of the
    canvas's resolution, ``2 * channels`` features per cell.

    Each cell sees 19 x 19 pixels, most of a 28-pixel digit. With the CNN's two strided layers
    a cell sees only 9 x 9 pixels, and a weighted sum of such cells is a bag of stroke pieces:
    on cluttered 60 x 60 that encoder was at 41% validation error after 88,000 training images
    where this one was at 18% (same core, Adam 1e-3, batch 128), for 2.3 times the FLOPs.
    """
    return _channels_last(nn.Sequential(
        nn.Conv2d(in_channels, channels, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(2 * channels, 2 * channels, 3, padding=1), nn.ReLU(),
    ))  # fmt: skip


class FullViewFC(nn.Module):
    """Two fully connected ReLU layers on the flattened canvas, then a linear classifier."""

    def __init__(self, canvas_shape: tuple[int, int, int], num_classes: int, units: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(), nn.Linear(int(np.prod(canvas_shape)), units), nn.ReLU(),
            nn.Linear(units, units), nn.ReLU(), nn.Linear(units, num_classes),
        )  # fmt: skip

    def forward(self, canvases: torch.Tensor) -> torch.Tensor:
        return self.layers(canvases)  # (B, n_classes) logits


class FullViewCNN(nn.Module):
    """Two convolution layers (strided, see ``_encoder``), then a linear classifier."""

    def __init__(self, canvas_shape: tuple[int, int, int], num_classes: int, channels: int) -> None:
        super().__init__()
        self.encoder = _encoder(canvas_shape[0], channels)
        cells = (-(-canvas_shape[1] // 4)) * (-(-canvas_shape[2] // 4))  # ceil: stride 2 twice
        self.classifier = nn.Linear(2 * channels * cells, num_classes)

    def forward(self, canvases: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(canvases).flatten(1))  # (B, n_classes) logits


def _conv_bn(
    in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1
) -> list[nn.Module]:
    """A convolution without bias, batch normalisation and a ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels), nn.ReLU(),
    ]  # fmt: skip


class DeepCNN(nn.Module):
    """Six convolutions with batch normalisation, a global max-pool and a linear classifier.

    With ``c`` channels: 5 x 5 stride 2 (``c``), max-pool; 3 x 3 (``c``), 3 x 3 (``2c``),
    max-pool; 3 x 3 (``2c``), 3 x 3 (``4c``), max-pool; 3 x 3 (``4c``); the maximum over the
    remaining cells (1/16 of the canvas's side). A unit of the last layer sees 99 x 99 pixels,
    several digits' worth, and the global maximum makes the answer the same wherever the digit
    is, so the canvas size changes the cost and not the parameters. The first layer's stride
    and pool keep the arithmetic at the canvas's full resolution small.
    """

    def __init__(self, canvas_shape: tuple[int, int, int], num_classes: int, channels: int) -> None:
        super().__init__()
        c = channels
        self.encoder = _channels_last(nn.Sequential(
            *_conv_bn(canvas_shape[0], c, kernel=5, stride=2), nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(c, c), *_conv_bn(c, 2 * c), nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(2 * c, 2 * c), *_conv_bn(2 * c, 4 * c), nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(4 * c, 4 * c),
        ))  # fmt: skip
        self.classifier = nn.Linear(4 * c, num_classes)

    def forward(self, canvases: torch.Tensor) -> torch.Tensor:
        features = self.encoder(canvases).amax(dim=(2, 3))  # (B, 4c): the global max-pool
        return self.classifier(features)  # (B, n_classes) logits


class SoftAttention(nn.Module):
    """Soft attention over a CNN feature grid, ``T`` steps of a recurrent core.

    ``a_t = v^T tanh(W_f f_i + W_h h_{t-1})``, ``alpha_t = softmax_i(a_t)`` over all cells ``i``,
    ``z_t = sum_i alpha_t,i f_i``, ``h_t = GRU(z_t, h_{t-1})``; logits ``= W_c h_T``.
    """

    def __init__(
        self, canvas_shape: tuple[int, int, int], num_classes: int, config: BaselineConfig
    ) -> None:
        super().__init__()
        features = 2 * config.conv_channels
        assert config.attention_steps is not None, "resolved from the environment by the caller"
        self.steps = config.attention_steps
        self.encoder = _soft_encoder(canvas_shape[0], config.conv_channels)
        self.key = nn.Linear(features, config.attention_units)  # W_f
        self.query = nn.Linear(config.hidden_size, config.attention_units)  # W_h
        self.score = nn.Linear(config.attention_units, 1)  # v
        self.core = nn.GRUCell(features, config.hidden_size)
        self.classifier = nn.Linear(config.hidden_size, num_classes)

    def attend(self, canvases: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, n_classes)`` and attention weights ``(B, T, H', W')`` (each sums to 1)."""
        grid = self.encoder(canvases)  # (B, D, H', W')
        batch, _, rows, cols = grid.shape
        cells = grid.flatten(2).transpose(1, 2)  # (B, H'W', D)
        # v^T tanh(u) + b computed as 2 v^T sigmoid(2u) + (b - sum(v)), the same number: on a
        # CPU sigmoid is several times faster than tanh, and this is the model's largest
        # elementwise pass (every cell, every step)
        keys = 2 * self.key(cells)  # (B, H'W', attention_units): 2 W_f f_i
        v, b = 2 * self.score.weight.T, self.score.bias - self.score.weight.sum()  # (units, 1)
        h = cells.new_zeros(batch, self.core.hidden_size)
        weights = []
        for _ in range(self.steps):
            u2 = keys + 2 * self.query(h)[:, None]  # (B, H'W', attention_units)
            scores = (torch.sigmoid(u2) @ v).squeeze(2) + b  # (B, H'W')
            alpha = torch.softmax(scores, dim=1)
            z = torch.bmm(alpha[:, None], cells).squeeze(1)  # (B, D): sum_i alpha_i f_i
            h = self.core(z, h)
            weights.append(alpha.view(batch, rows, cols))
        return self.classifier(h), torch.stack(weights, dim=1)

    def forward(self, canvases: torch.Tensor) -> torch.Tensor:
        return self.attend(canvases)[0]


def attention_on_target(
    weights: np.ndarray, boxes: np.ndarray, height: int, width: int
) -> np.ndarray:
    """``(N, T)``: the attention weight (of ``weights`` ``(N, T, h, w)``) on the cells whose
    share of the canvas overlaps each canvas's target box (``boxes`` ``(N, 4)``, top, left,
    bottom, right). Cell ``(i, j)`` of an ``h x w`` grid over an ``H x W`` canvas is taken to
    cover rows ``floor(i H / h) .. floor((i + 1) H / h) - 1`` (columns likewise): the pixels its
    stride steps over, not its wider receptive field."""
    rows, cols = weights.shape[2:]
    row_edges = np.floor(np.arange(rows + 1) * height / rows)
    col_edges = np.floor(np.arange(cols + 1) * width / cols)
    top, left, bottom, right = (boxes[:, i, None] for i in range(4))
    on_rows = (row_edges[None, :-1] < bottom) & (row_edges[None, 1:] > top)  # (N, h)
    on_cols = (col_edges[None, :-1] < right) & (col_edges[None, 1:] > left)  # (N, w)
    mask = on_rows[:, :, None] & on_cols[:, None, :]
    return np.einsum("nthw,nhw->nt", weights, mask.astype(weights.dtype))


def make_baseline(name: str, task: Task, config: BaselineConfig) -> nn.Module:
    shape, n = task.canvas_shape, task.num_classes
    if name == "fc":
        return FullViewFC(shape, n, config.hidden_size)
    if name == "cnn":
        return FullViewCNN(shape, n, config.conv_channels)
    if name == "deep-cnn":
        return DeepCNN(shape, n, config.conv_channels)
    if name == "soft":
        return SoftAttention(shape, n, config)
    raise ConfigError(f"No full-view baseline {name!r}; they are {', '.join(BASELINES)}.")


class FullViewLearner:
    """Trains a full-view baseline by cross-entropy on the task's canvases (see the module doc)."""

    def __init__(
        self,
        name: str,
        env_settings: dict[str, Any],
        config: BaselineConfig,
        seed: int,
        device: torch.device,
        eval_batch: int = 1000,
    ) -> None:
        self.task = task_of(env_settings)
        self.device, self.eval_batch = device, eval_batch
        torch.manual_seed(seed)
        self.model = make_baseline(name, self.task, config).to(device)
        self.rng = np.random.default_rng(seed)
        self.precision = training_precision(config.precision, device)
        self.autocast = self.precision == "bfloat16"
        # The warning for a bfloat16 the device emulates: once, when training starts.
        self._warned = config.precision != "bfloat16"

    @property
    def train_size(self) -> int:
        return self.task.split_size("train")

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.model.parameters() if p.requires_grad], "lr": lr}]

    def _tensor(self, canvases: np.ndarray) -> torch.Tensor:
        return torch.tensor(canvases, device=self.device).float().div_(255.0)

    def loss(self, batch_size: int, progress: float = 0.0) -> dict[str, torch.Tensor]:
        self.model.train()  # batch normalisation: batch statistics (eval() uses running ones)
        if not self._warned:
            self._warned = True
            if self.device.type == "cpu" and not cpu_has_bfloat16():
                warnings.warn(
                    "precision bfloat16: this CPU has no bfloat16 instructions (AVX-512 BF16 or "
                    "AMX), so training emulates them and runs slower than in float32. To train "
                    "in bfloat16 only where the CPU has them, add --precision auto (a run of "
                    "its own, outside the recipe; its figures may differ by rounding).",
                    stacklevel=2,
                )
        indices = self.rng.integers(0, self.train_size, batch_size)
        canvases, labels = self.task.canvases("train", indices, self.rng)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(self._tensor(canvases))
        target = torch.from_numpy(labels).to(self.device)
        loss = F.cross_entropy(logits.float(), target)
        accuracy = (logits.argmax(1) == target).float().mean()
        # Logged as metrics.jsonl's train_bfloat16, the share of the epoch's steps computed in
        # bfloat16: under precision auto a resume on another machine may change it.
        in_bfloat16 = torch.tensor(float(self.autocast))
        return {"total": loss, "classification": loss, "accuracy": accuracy,
                "bfloat16": in_bfloat16}  # fmt: skip

    @torch.no_grad()
    def predictions(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Predicted and true labels on the whole fixed split."""
        self.model.eval()
        fixed = self.task.fixed_canvases(split)
        predicted = [
            self.model(self._tensor(fixed.images[i : i + self.eval_batch])).argmax(1).cpu().numpy()
            for i in range(0, len(fixed.labels), self.eval_batch)
        ]
        return np.concatenate(predicted), fixed.labels

    @torch.no_grad()
    def attention(self, canvases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Soft attention only: class logits ``(n, classes)`` and attention weights
        ``(n, T, h, w)`` of the model on uint8 ``canvases`` ``(n, C, H, W)``."""
        self.model.eval()
        logits, weights = self.model.attend(self._tensor(canvases))
        return logits.cpu().numpy(), weights.cpu().numpy()

    def looking(self, split: str) -> TargetShare | None:
        """Soft attention: the share of its attention weight on the feature cells that overlap
        the target box (:func:`attention_on_target`), step by step; None for the CNNs and the
        FC network, which weigh the whole canvas at once."""
        if not isinstance(self.model, SoftAttention):
            return None
        fixed, boxes = self.task.fixed_canvases(split), self.task.fixed_target_boxes(split)
        shares = []
        for start in range(0, len(fixed.labels), self.eval_batch):
            chunk = slice(start, start + self.eval_batch)
            _, weights = self.attention(fixed.images[chunk])
            shares.append(attention_on_target(weights, boxes[chunk], *fixed.images.shape[2:]))
        return TargetShare.of(np.concatenate(shares))

    def error(self, split: str, samples: int = 1) -> float:
        """Error in percent on the whole fixed ``split`` (one deterministic pass: ``samples``
        must be 1)."""
        if samples != 1:
            raise ConfigError("--samples (Monte Carlo averaging) applies to RAM runs only.")
        predicted, labels = self.predictions(split)
        return 100.0 * float(np.mean(predicted != labels))

    def error_and_looking(self, split: str, samples: int = 1) -> tuple[float, TargetShare | None]:
        """:meth:`error` and :meth:`looking` (two passes: the weights are a second output)."""
        return self.error(split, samples), self.looking(split)

    def draw(self, out: Path, n: int, split: str, title: str = "") -> None:
        """Soft attention: its weights over the first ``n`` canvases of ``split`` at each step.
        The CNN and FC attend to nothing: refused."""
        from glimpse.agents.visualise import captions, draw_attention

        if not isinstance(self.model, SoftAttention):
            raise ConfigError(
                f"This is a full-view {type(self.model).__name__}: it reads the whole canvas at "
                "once, with no glimpses and no attention to draw. glimpse viz draws RAM and PPO "
                "trajectories and soft attention maps."
            )
        fixed = self.task.fixed_canvases(split)
        canvases, labels = fixed.images[:n], fixed.labels[:n]
        logits, weights = self.attention(canvases)
        texts = captions(labels, logits.argmax(1), logits, np.asarray(self.task.class_names))
        draw_attention(canvases, weights, texts, out, title=title)

    def validation_error(self) -> float:
        return self.error("val")

    def test_error(self) -> float:
        return self.error("test")

    def data_state(self) -> dict[str, Any]:
        """The batch sampler's PCG64 state: a dict of strings and ints (plain data)."""
        return {"rng": self.rng.bit_generator.state}

    def load_data_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
