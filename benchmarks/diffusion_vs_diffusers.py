"""genzoo's DDPM U-Net against diffusers 0.42.1's UNet2DModel at a matched architecture: training speed,
DDIM sampling speed and the share of this CPU's matmul peak, in one process.

The network. genzoo ``UNet((1, 28, 28), 1, channels=32, channel_mult=(1, 2, 2), blocks=1,
attention_resolutions=(), heads=4, dropout=0.0, groups=8)``, inside the DDPM that
``build_model("ddpm", ...)`` builds (eps prediction, L_simple, cosine schedule, T = 1000), against

    UNet2DModel(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                layers_per_block=1, down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                norm_num_groups=8, attn_norm_num_groups=8, attention_head_dim=16,
                resnet_time_scale_shift="scale_shift", add_attention=True, dropout=0.0)

Both: 28 -> 14 -> 7 by stride-2 3x3 convolutions, one residual block per level going down and two
coming up (each reading a skip), a middle of residual block, self-attention, residual block at 7x7,
nearest upsampling then a 3x3 convolution, scale-shift GroupNorm (8 groups) in every residual block,
a 2-layer MLP of a 32-dimensional [cos, sin] time embedding. ``--attention-resolutions 7`` adds
attention after every residual block of the 7x7 level in both (diffusers: ``AttnDownBlock2D`` /
``AttnUpBlock2D`` at that level). The two have the same parameters, tensor for tensor: before timing,
the script copies genzoo's weights (moved off their initial values) into diffusers' model with a strict
``load_state_dict`` and checks that both networks give the same output and draw the same DDIM samples
from the same seed; the timed models then start from the same (genzoo-initialised) weights. Without
``attn_norm_num_groups=8`` diffusers' middle attention has no GroupNorm when the blocks use
scale-shift; its default ``attention_head_dim=8`` would make 8 heads of 8 instead of genzoo's 4 of 16.
What still differs: genzoo computes q, k, v and the output projection as 1x1 convolutions on
(B, C, H, W), diffusers as ``nn.Linear`` on (B, HW, C) after a transpose; both call
``F.scaled_dot_product_attention``. 28 -> 14 -> 7 works in diffusers because 28 is a multiple of 4;
a fourth level fails there (7 -> 4 -> upsampled to 8, which does not match the 7x7 skip), where
genzoo upsamples to each skip's own size: diffusers would need the images padded to 32x32.

Training step, on random MNIST-shaped images (256 levels in [0, 1], the same batches for both):
genzoo ``model.loss(x)["loss"].mean()`` (x -> 2x - 1, t ~ U{0..999}, x_t by q_sample, eps MSE) against
diffusers' recipe (``DDPMScheduler(beta_schedule="squaredcos_cap_v2").add_noise`` and
``F.mse_loss(unet(x_t, t).sample, noise)``), then backward and one ``torch.optim.AdamW(lr=2e-4,
weight_decay=0, fused=True)`` step for both (genzoo's trainer uses the fused kernel; diffusers' example
scripts use the default foreach AdamW: the optimizer is not what is compared). Each lever below gets a
fresh pair of models; after ``--warmup`` untimed steps every (library, lever) takes
``--steps-per-round`` steps per round for ``--rounds`` rounds, in an order that rotates each round, so
machine noise hits all alike. Each step is timed alone; the rate is the batch over the median step.

Levers, the same for both libraries:
- ``fp32``: fp32, NCHW;
- ``channels_last``: fp32, the model and the batch in channels_last (what genzoo's trainer does);
- ``bf16``: ``torch.autocast("cpu", torch.bfloat16)`` over the forward, channels_last;
- ``bf16-sdpa-fp32``: as ``bf16``, but ``F.scaled_dot_product_attention`` (patched for the step, in both
  libraries) runs on fp32 copies of q, k, v outside autocast: convolutions in bf16, attention in fp32;
- ``compile`` (``--compile``): ``torch.compile`` of the network, fp32 channels_last; ``compile-bf16``
  likewise under bf16 autocast (name it in ``--levers``). A compiled lever takes at least 2 untimed
  warmup steps (the first compiles forward and backward; their time is in the notes); a lever that
  raises is reported in its row, not raised. Off by default: on the 2-core development machine, loaded
  by other jobs, compiling the two networks at batch 2 had not finished after 5 minutes.

Share of peak: the network's forward FLOPs per example (``torch.utils.flop_counter.FlopCounterMode``),
times 3 for forward + backward, times the examples/s, over this CPU's rate on a large square matmul
(``--matmul-size``) at the same thread count, in fp32 and in bf16.

Sampling: seconds per image to draw ``--sample-n`` images with 25 DDIM steps (eta = 0): genzoo
``model.generate(n, None, generator, sampler="ddim", steps=25)`` against ``DDIMPipeline`` with
``DDIMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing", set_alpha_to_one=True,
clip_sample=True)`` called with ``use_clipped_model_output=True``: the same update (x0 clamped to
[-1, 1], eps recomputed from it) over the same timesteps 999, 959, ..., 39. Models in eval mode, fp32,
NCHW and channels_last; one untimed 2-step draw each first, then ``--sample-reps`` alternating draws,
the median shown.

    pip install -e ".[test]"       # diffusers==0.42.1
    OMP_NUM_THREADS=1 python benchmarks/diffusion_vs_diffusers.py --threads 1
    OMP_NUM_THREADS=1 python benchmarks/diffusion_vs_diffusers.py --threads 1 --levers fp32,channels_last --compile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.metadata
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

try:
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel
except ImportError:
    print("this benchmark needs diffusers: pip install -e .[test]", file=sys.stderr)
    sys.exit(2)

from genzoo.data.core import DataInfo
from genzoo.models.registry import build_model
from genzoo.nn.denoisers import Attention, ResBlock, UNet, Upsample

INFO = DataInfo("mnist", (1, 28, 28), 10, "discrete", 256)
CHANNELS, CHANNEL_MULT, BLOCKS, HEADS, GROUPS = 32, (1, 2, 2), 1, 4, 8
TIMESTEPS = 1000
LR = 2e-4  # genzoo's DDPM training default
COMPILE_WARMUP = 2  # untimed steps of a compiled lever at least (the first compiles forward and backward)


@dataclass(frozen=True)
class Lever:
    label: str
    channels_last: bool = False
    bf16: bool = False
    sdpa_fp32: bool = False
    compile: bool = False


LEVERS = {
    "fp32": Lever("fp32, NCHW"),
    "channels_last": Lever("fp32, channels_last", channels_last=True),
    "bf16": Lever("bf16 autocast, channels_last", channels_last=True, bf16=True),
    "bf16-sdpa-fp32": Lever("bf16 autocast, channels_last, SDPA in fp32", channels_last=True, bf16=True,
                            sdpa_fp32=True),
    "compile": Lever("torch.compile, fp32, channels_last", channels_last=True, compile=True),
    "compile-bf16": Lever("torch.compile, bf16 autocast, channels_last", channels_last=True, bf16=True,
                          compile=True),
}
DEFAULT_LEVERS = "fp32,channels_last,bf16,bf16-sdpa-fp32"
SAMPLE_LEVERS = ("fp32", "channels_last")


# --- the two networks ----------------------------------------------------------------------------
def genzoo_ddpm(attention: tuple[int, ...]):
    """genzoo's DDPM (eps, L_simple, cosine, T = 1000) around the matched U-Net; (0,) = the middle's attention only."""
    return build_model("ddpm", INFO, {"channels": CHANNELS, "channel_mult": CHANNEL_MULT, "blocks": BLOCKS,
                                      "attention_resolutions": attention or (0,), "heads": HEADS, "dropout": 0.0,
                                      "prediction": "eps", "timesteps": TIMESTEPS})


def diffusers_unet(attention: tuple[int, ...]) -> UNet2DModel:
    """UNet2DModel laid out as genzoo's U-Net: attention blocks at the levels whose height is in ``attention``."""
    heights = [INFO.shape[1]]
    for _ in CHANNEL_MULT[1:]:
        heights.append((heights[-1] + 1) // 2)
    down = tuple("AttnDownBlock2D" if h in attention else "DownBlock2D" for h in heights)
    up = tuple("AttnUpBlock2D" if h in attention else "UpBlock2D" for h in reversed(heights))
    return UNet2DModel(sample_size=INFO.shape[1], in_channels=INFO.shape[0], out_channels=INFO.shape[0],
                       block_out_channels=tuple(CHANNELS * m for m in CHANNEL_MULT), layers_per_block=BLOCKS,
                       down_block_types=down, up_block_types=up, norm_num_groups=GROUPS, attn_norm_num_groups=GROUPS,
                       attention_head_dim=CHANNELS * CHANNEL_MULT[-1] // HEADS, resnet_time_scale_shift="scale_shift",
                       add_attention=True, dropout=0.0)


def diffusers_state(net: UNet) -> dict[str, Tensor]:
    """genzoo's U-Net weights under diffusers' UNet2DModel names (1x1 convolutions become Linear weights)."""
    state: dict[str, Tensor] = {}

    def plain(prefix: str, module: nn.Module) -> None:
        for name, p in module.named_parameters():
            state[f"{prefix}.{name}"] = p.detach()

    def resblock(prefix: str, block: ResBlock) -> None:
        plain(f"{prefix}.norm1", block.in_layers[0])
        plain(f"{prefix}.conv1", block.in_layers[2])
        plain(f"{prefix}.time_emb_proj", block.embedding[1])
        plain(f"{prefix}.norm2", block.norm)
        plain(f"{prefix}.conv2", block.out_layers[2])
        if isinstance(block.skip, nn.Conv2d):
            plain(f"{prefix}.conv_shortcut", block.skip)

    def attention(prefix: str, block: Attention) -> None:
        plain(f"{prefix}.group_norm", block.norm)
        c = block.proj.in_channels  # qkv's outputs are [q (all heads), k, v], each head's channels together
        for k, name in enumerate(("to_q", "to_k", "to_v")):
            state[f"{prefix}.{name}.weight"] = block.qkv.weight.detach()[k * c:(k + 1) * c, :, 0, 0]
            state[f"{prefix}.{name}.bias"] = block.qkv.bias.detach()[k * c:(k + 1) * c]
        state[f"{prefix}.to_out.0.weight"] = block.proj.weight.detach()[:, :, 0, 0]
        state[f"{prefix}.to_out.0.bias"] = block.proj.bias.detach()

    plain("conv_in", net.stem)
    plain("time_embedding.linear_1", net.conditioning.time[0])
    plain("time_embedding.linear_2", net.conditioning.time[2])
    level = block = 0
    for layers in net.down:
        if isinstance(layers[0], nn.Conv2d):  # the strided convolution that ends a level
            plain(f"down_blocks.{level}.downsamplers.0.conv", layers[0])
            level, block = level + 1, 0
            continue
        resblock(f"down_blocks.{level}.resnets.{block}", layers[0])
        if len(layers) > 1:
            attention(f"down_blocks.{level}.attentions.{block}", layers[1])
        block += 1
    resblock("mid_block.resnets.0", net.middle[0])
    attention("mid_block.attentions.0", net.middle[1])
    resblock("mid_block.resnets.1", net.middle[2])
    level = block = 0
    for layers in net.up:
        upsampled = False
        for layer in layers:
            if isinstance(layer, ResBlock):
                resblock(f"up_blocks.{level}.resnets.{block}", layer)
            elif isinstance(layer, Attention):
                attention(f"up_blocks.{level}.attentions.{block}", layer)
            elif isinstance(layer, Upsample):
                plain(f"up_blocks.{level}.upsamplers.0.conv", layer.conv)
                upsampled = True
        level, block = (level + 1, 0) if upsampled else (level, block + 1)
    plain("conv_norm_out", net.out[0])
    plain("conv_out", net.out[2])
    return state


def load_genzoo_weights(unet: UNet2DModel, net: UNet) -> None:
    """Copy genzoo's weights into ``unet``; strict: every tensor of both must be matched, shape for shape."""
    unet.load_state_dict({k: v.clone().contiguous() for k, v in diffusers_state(net).items()}, strict=True)


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def forward_flops(net: Callable[[Tensor, Tensor], Tensor], batch: int = 2) -> float:
    """The network's forward FLOPs per example (dense kernels), fp32."""
    x, t = torch.randn(batch, *INFO.shape), torch.tensor([10, 900] * (batch // 2))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(x, t)
    return counter.get_total_flops() / batch


# --- samplers --------------------------------------------------------------------------------------
def ddim_pipeline(unet: UNet2DModel) -> DDIMPipeline:
    scheduler = DDIMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                              clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
                              prediction_type="epsilon", timestep_spacing="trailing")
    pipe = DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def genzoo_sampler(ddpm) -> Callable[[int, int, int], Tensor]:
    def sample(n: int, steps: int, seed: int) -> Tensor:
        return ddpm.generate(n, None, torch.Generator().manual_seed(seed), sampler="ddim", steps=steps)
    return sample


def diffusers_sampler(pipe: DDIMPipeline) -> Callable[[int, int, int], Tensor]:
    def sample(n: int, steps: int, seed: int) -> Tensor:
        return pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), eta=0.0, num_inference_steps=steps,
                    use_clipped_model_output=True, output_type="pt").images
    return sample


# --- the check that both are the same network --------------------------------------------------------
@torch.no_grad()
def check_equivalence(attention: tuple[int, ...], seed: int, sample_steps: int) -> dict:
    """genzoo's weights, moved off their initial values (its zero-initialised output layers included),
    copied into diffusers: max |difference| of the outputs on one batch and of 2 DDIM samples (on
    genzoo's 256 levels; diffusers' are rounded to them)."""
    torch.manual_seed(seed + 1)
    ddpm = genzoo_ddpm(attention).eval()
    for p in ddpm.parameters():
        p.add_(0.05 * torch.randn_like(p))
    unet = diffusers_unet(attention).eval()
    load_genzoo_weights(unet, ddpm.net)
    x, t = torch.randn(4, *INFO.shape), torch.tensor([0, 250, 600, 999])
    ours, theirs = ddpm.net(x, t), unet(x, t).sample
    samples = genzoo_sampler(ddpm)(2, sample_steps, seed), diffusers_sampler(ddim_pipeline(unet))(2, sample_steps, seed)
    levels = INFO.num_levels - 1
    return {"output_max_abs_diff": (ours - theirs).abs().max().item(), "output_scale": ours.abs().max().item(),
            "sample_max_abs_diff": (samples[0] - (samples[1] * levels).round() / levels).abs().max().item(),
            "sample_share_equal": (samples[0] == (samples[1] * levels).round() / levels).float().mean().item()}


# --- training ----------------------------------------------------------------------------------------
def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def sdpa_in_fp32(enabled: bool):
    """While active, ``F.scaled_dot_product_attention`` runs on fp32 copies of q, k, v outside autocast
    (both libraries look it up in ``torch.nn.functional`` at call time), its output cast back."""
    if not enabled:
        yield
        return
    original = F.scaled_dot_product_attention

    def fp32_sdpa(query, key, value, *args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            return original(query.float(), key.float(), value.float(), *args, **kwargs).to(query.dtype)

    F.scaled_dot_product_attention = fp32_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@dataclass
class Contender:
    library: str
    lever_key: str
    lever: Lever
    model: nn.Module  # what the optimizer trains
    loss: Callable[[Tensor], Tensor]
    params: int
    optimizer: torch.optim.Optimizer | None = None
    step_seconds: list[float] = field(default_factory=list)
    warmup_seconds: list[float] = field(default_factory=list)
    error: str | None = None

    def __post_init__(self):
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, weight_decay=0.0, fused=True)

    def step(self, x: Tensor) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=self.lever.bf16), sdpa_in_fp32(self.lever.sdpa_fp32):
            loss = self.loss(x)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        seconds = time.perf_counter() - start
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss {loss.item()}")
        return seconds


def contenders_for(key: str, base_ddpm, base_unet: UNet2DModel) -> list[Contender]:
    lever = LEVERS[key]
    fmt = torch.channels_last if lever.channels_last else torch.contiguous_format
    ddpm = copy.deepcopy(base_ddpm).train().to(memory_format=fmt)
    unet = copy.deepcopy(base_unet).train().to(memory_format=fmt)
    scheduler = DDPMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="squaredcos_cap_v2",
                              prediction_type="epsilon")
    network = unet
    if lever.compile:
        ddpm.net = torch.compile(ddpm.net)
        network = torch.compile(unet)

    def genzoo_loss(x: Tensor) -> Tensor:
        return ddpm.loss(x)["loss"].mean()

    def diffusers_loss(x: Tensor) -> Tensor:  # diffusers' train_unconditional.py, eps target
        x0 = 2 * x - 1
        noise = torch.randn_like(x0)
        t = torch.randint(0, TIMESTEPS, (len(x0),))
        return F.mse_loss(network(scheduler.add_noise(x0, noise, t), t).sample.float(), noise)

    return [Contender("genzoo", key, lever, ddpm, genzoo_loss, params(base_ddpm.net)),
            Contender("diffusers", key, lever, unet, diffusers_loss, params(base_unet))]


def train_interleaved(contenders: list[Contender], batches: dict[bool, list[Tensor]], args) -> None:
    """``--warmup`` untimed steps each, then ``--rounds`` rounds of ``--steps-per-round`` steps each, the order rotating."""
    i = 0

    def run(c: Contender, record: list[float]) -> None:
        nonlocal i
        if c.error is not None:
            return
        try:
            record.append(c.step(batches[c.lever.channels_last][i % len(batches[False])]))
        except Exception as error:  # noqa: BLE001 - a lever that fails (torch.compile most likely) is reported
            c.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:120] if str(error).strip() else ''}"
        i += 1

    started = time.perf_counter()
    for c in contenders:  # a compiled network compiles in its first steps, which must not be timed
        for _ in range(max(args.warmup, COMPILE_WARMUP if c.lever.compile else 0)):
            run(c, c.warmup_seconds)
        if c.warmup_seconds or c.error:
            progress(f"warmup {c.library}, {c.lever.label}: {sum(c.warmup_seconds):.1f} s"
                     + (f", failed: {c.error}" if c.error else ""))
    for r in range(args.rounds):
        k = r % len(contenders)
        for c in contenders[k:] + contenders[:k]:
            for _ in range(args.steps_per_round):
                run(c, c.step_seconds)
        progress(f"round {r + 1}/{args.rounds} done, {time.perf_counter() - started:.0f} s of training")


def matmul_peak(dtype: torch.dtype, size: int, budget: float) -> float:
    """GFLOP/s of a size x size matmul in ``dtype``, repeated for at least ``budget`` seconds after one untimed call."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    reps, start = 0, time.perf_counter()
    while reps < 2 or time.perf_counter() - start < budget:
        a @ b
        reps += 1
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9


# --- sampling ----------------------------------------------------------------------------------------
def time_sampling(base_ddpm, base_unet: UNet2DModel, args) -> list[dict]:
    rows, samplers = [], []
    for key in SAMPLE_LEVERS:
        fmt = torch.channels_last if LEVERS[key].channels_last else torch.contiguous_format
        ddpm = copy.deepcopy(base_ddpm).eval().to(memory_format=fmt)
        unet = copy.deepcopy(base_unet).eval().to(memory_format=fmt)
        samplers += [("genzoo", key, genzoo_sampler(ddpm)), ("diffusers", key, diffusers_sampler(ddim_pipeline(unet)))]
    seconds: dict[tuple[str, str], list[float]] = {(lib, key): [] for lib, key, _ in samplers}
    with torch.no_grad():
        for _, _, sample in samplers:  # first-call overheads, untimed
            sample(args.sample_n, 2, args.seed)
        for r in range(args.sample_reps):
            k = r % len(samplers)
            for lib, key, sample in samplers[k:] + samplers[:k]:
                start = time.perf_counter()
                images = sample(args.sample_n, args.sample_steps, args.seed + r)
                seconds[(lib, key)].append(time.perf_counter() - start)
                if tuple(images.shape) != (args.sample_n, *INFO.shape) or not bool(torch.isfinite(images).all()):
                    raise SystemExit(f"{lib} ({key}) drew {tuple(images.shape)} images with non-finite values")
    for lib, key, _ in samplers:
        per_image = statistics.median(seconds[(lib, key)]) / args.sample_n
        rows.append({"lever": LEVERS[key].label, "library": lib, "seconds_per_image": per_image,
                     "draws": seconds[(lib, key)]})
    for row in rows:
        peer = next(r for r in rows if r["lever"] == row["lever"] and r["library"] == "diffusers")
        row["ratio"] = peer["seconds_per_image"] / row["seconds_per_image"] if row["library"] == "genzoo" else None
    return rows


# --- output ------------------------------------------------------------------------------------------
def fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return format(value, spec)


def training_rows(contenders: list[Contender], batch: int, flops: dict[str, float], peaks: dict[str, float]) -> list[dict]:
    rows = []
    for c in contenders:
        seconds = statistics.median(c.step_seconds) if c.step_seconds and c.error is None else math.nan
        rate = batch / seconds
        achieved = 3 * flops[c.library] * rate / 1e9  # GFLOP/s, forward + backward = 3 forwards
        rows.append({"lever": c.lever.label, "lever_key": c.lever_key, "library": c.library, "params": c.params,
                     "step_ms": 1000 * seconds, "examples_per_s": rate, "gflops": achieved,
                     "share_fp32_peak": achieved / peaks["fp32"], "share_bf16_peak": achieved / peaks["bf16"],
                     "timed_steps": len(c.step_seconds), "warmup_s": sum(c.warmup_seconds), "error": c.error})
    for row in rows:
        peer = next(r for r in rows if r["lever_key"] == row["lever_key"] and r["library"] == "diffusers")
        row["ratio"] = row["examples_per_s"] / peer["examples_per_s"] if row["library"] == "genzoo" else None
    return rows


def training_table(rows: list[dict]) -> str:
    header = ("| lever | library | params | step (ms) | train ex/s | genzoo / diffusers | GFLOP/s | "
              "% fp32 peak | % bf16 peak |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['lever']} | {r['library']} | {r['params']:,} | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['lever']} | {r['library']} | {r['params']:,} | {fmt(r['step_ms'], ',.0f')} | "
                     f"{fmt(r['examples_per_s'], ',.1f')} | {fmt(r['ratio'], '.2f')} | {fmt(r['gflops'], '.1f')} | "
                     f"{fmt(100 * r['share_fp32_peak'], '.0f')}% | {fmt(100 * r['share_bf16_peak'], '.0f')}% |")
    return "\n".join(lines)


def sampling_table(rows: list[dict], n: int, steps: int) -> str:
    lines = [f"| lever | library | s / image (DDIM {steps} steps, batch {n}) | genzoo / diffusers (speed) |",
             "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['lever']} | {r['library']} | {r['seconds_per_image']:.4f} | {fmt(r['ratio'], '.2f')} |")
    return "\n".join(lines)


def notes(result: dict) -> list[str]:
    rows, eq, peaks = result["training"], result["equivalence"], result["matmul_peak_gflops"]
    ok = [r for r in rows if not r["error"]]
    out = []
    best = {lib: max((r for r in ok if r["library"] == lib), key=lambda r: r["examples_per_s"], default=None)
            for lib in ("genzoo", "diffusers")}
    if best["genzoo"] and best["diffusers"]:
        out.append(f"Best against best: genzoo {best['genzoo']['examples_per_s']:.1f} ex/s ({best['genzoo']['lever']}) "
                   f"vs diffusers {best['diffusers']['examples_per_s']:.1f} ex/s ({best['diffusers']['lever']}): "
                   f"{best['genzoo']['examples_per_s'] / best['diffusers']['examples_per_s']:.2f}x "
                   "(the issue's floor 1.0x, aim 1.5x).")
    by = {(r["library"], r["lever_key"]): r for r in ok}
    for lib in ("genzoo", "diffusers"):
        base = by.get((lib, "channels_last"))
        if base:
            parts = [f"{key} {by[(lib, key)]['examples_per_s'] / base['examples_per_s']:.2f}x"
                     for key in LEVERS if key != "channels_last" and (lib, key) in by]
            if parts:
                out.append(f"{lib}, each lever against fp32 channels_last: {', '.join(parts)}.")
    compiled = [r for r in rows if r["lever_key"].startswith("compile")]
    for r in compiled:
        out.append(f"{r['library']} {r['lever']}: " + (f"failed ({r['error']})." if r["error"] else
                                                       f"warmup incl. compilation {r['warmup_s']:.0f} s."))
    out.append(f"Matmul peak ({result['settings']['matmul size']}^2, {result['settings']['threads']} threads): "
               f"fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s (bf16 / fp32 = "
               f"{peaks['bf16'] / peaks['fp32']:.3f}). Forward FLOPs per example: genzoo "
               f"{result['forward_mflop']['genzoo']:.1f} M, diffusers {result['forward_mflop']['diffusers']:.1f} M; "
               "a training step counts 3 forwards."
               + (" A share of the bf16 peak above 100% means the step's bf16 convolutions (oneDNN) beat the bf16 "
                  "matmul kernel: that peak is no ceiling on this CPU." if any(r["share_bf16_peak"] > 1 for r in ok)
                  else ""))
    out.append(f"Same network: genzoo's perturbed weights loaded strictly into diffusers give outputs within "
               f"{eq['output_max_abs_diff']:.1e} (output scale {eq['output_scale']:.2f}); 2 DDIM samples from one seed "
               f"agree to {eq['sample_max_abs_diff']:.4f} ({100 * eq['sample_share_equal']:.1f}% of pixels on the same "
               f"level of 256).")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--batch", type=int, default=64, help="training batch")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per (library, lever) before the rounds")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps-per-round", type=int, default=2)
    p.add_argument("--levers", default=DEFAULT_LEVERS, help=f"comma-separated subset of {','.join(LEVERS)}")
    p.add_argument("--compile", action="store_true", help="add the torch.compile lever (fp32, channels_last)")
    p.add_argument("--attention-resolutions", default="",
                   help="heights (28, 14, 7) with attention in every block besides the middle's; '' = middle only")
    p.add_argument("--sample-n", type=int, default=None, help="images per draw (None: the training batch)")
    p.add_argument("--sample-steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--sample-reps", type=int, default=3, help="timed draws per (library, lever); the median is shown")
    p.add_argument("--matmul-size", type=int, default=1024)
    p.add_argument("--matmul-seconds", type=float, default=2.0, help="time spent on each matmul peak")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes (the test): batch 2, 2 rounds of 1 step, 2 images")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.warmup, args.rounds, args.steps_per_round = 2, 0, 2, 1
        args.sample_n, args.sample_reps, args.matmul_size, args.matmul_seconds = 2, 1, 256, 0.1
    args.sample_n = args.sample_n or args.batch
    keys = [k for k in args.levers.split(",") if k]
    if args.compile and "compile" not in keys:
        keys.append("compile")
    unknown = [k for k in keys if k not in LEVERS]
    if unknown or not keys:
        p.error(f"unknown lever(s) {', '.join(unknown)}; choose from {', '.join(LEVERS)}")
    args.lever_keys = keys
    args.attention = tuple(int(h) for h in args.attention_resolutions.split(",") if h)
    if args.rounds < 1 or args.steps_per_round < 1 or args.batch < 1 or args.warmup < 0:
        p.error("--rounds, --steps-per-round and --batch must be positive, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    equivalence = check_equivalence(args.attention, args.seed, args.sample_steps)
    torch.manual_seed(args.seed)
    base_ddpm = genzoo_ddpm(args.attention)
    base_unet = diffusers_unet(args.attention)
    load_genzoo_weights(base_unet, base_ddpm.net)  # the same starting weights
    flops = {"genzoo": forward_flops(base_ddpm.net), "diffusers": forward_flops(lambda x, t: base_unet(x, t).sample)}
    peaks = {"fp32": matmul_peak(torch.float32, args.matmul_size, args.matmul_seconds),
             "bf16": matmul_peak(torch.bfloat16, args.matmul_size, args.matmul_seconds)}

    generator = torch.Generator().manual_seed(args.seed)
    images = [torch.randint(0, INFO.num_levels, (args.batch, *INFO.shape), generator=generator).float()
              / (INFO.num_levels - 1) for _ in range(4)]
    batches = {False: images, True: [x.contiguous(memory_format=torch.channels_last) for x in images]}
    contenders = [c for key in args.lever_keys for c in contenders_for(key, base_ddpm, base_unet)]
    progress(f"{len(contenders)} contenders, batch {args.batch}: {args.warmup} warmup + {args.rounds} x "
             f"{args.steps_per_round} timed steps each")
    train_interleaved(contenders, batches, args)
    progress(f"sampling: {len(SAMPLE_LEVERS) * 2} samplers, {args.sample_reps} draws of {args.sample_n} images each")
    training = training_rows(contenders, args.batch, flops, peaks)
    sampling = time_sampling(base_ddpm, base_unet, args)

    versions = {lib: importlib.metadata.version(lib) for lib in ("torch", "diffusers")}
    settings = {"threads": args.threads, "batch": args.batch, "warmup": args.warmup, "rounds": args.rounds,
                "steps per round": args.steps_per_round,
                "attention": "middle" + "".join(f" + {h}x{h}" for h in args.attention),
                "optimizer": f"fused AdamW lr {LR}", "sample n": args.sample_n, "DDIM steps": args.sample_steps,
                "sample reps": args.sample_reps, "matmul size": args.matmul_size, **versions}
    result = {"settings": settings, "training": training, "sampling": sampling, "matmul_peak_gflops": peaks,
              "forward_mflop": {k: v / 1e6 for k, v in flops.items()}, "equivalence": equivalence}
    print()
    print(f"## Training step: examples/s, batch {args.batch}\n")
    print(training_table(training))
    print(f"\n## Sampling: {args.sample_steps} DDIM steps\n")
    print(sampling_table(sampling, args.sample_n, args.sample_steps))
    print()
    print(", ".join(f"{k}={v}" for k, v in settings.items()))
    print()
    print(" ".join(notes(result)))
    result["seconds"] = time.perf_counter() - started
    print(f"total {result['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
