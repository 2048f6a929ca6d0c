"""Speed of the autoregressive family on this CPU: sampling, training throughput, share of peak.

Three tables, at 28x28 (binarized MNIST's shape, Bernoulli outputs), each model at its default size:

1. Sampling 16 images, cached vs naive sampler, the same generator: seconds each, the speed-up,
   and whether the two samplers drew identical images (they must).
2. PixelCNN training throughput: genzoo's step as its trainer runs it (channels_last, bf16
   autocast, fused AdamW) against the same architecture written plainly (NCHW, fp32, mask
   multiplied into the weight, Adam): examples per second and the ratio. Before timing, the
   plain network gets genzoo's weights and both must give the same loss on one batch.
3. The share of this CPU's measured matmul peak that the PixelCNN training step reaches: the
   step's FLOPs (``torch.utils.flop_counter``, dense kernels: the masked-out taps count) divided
   by its time, against a large square matmul's rate in fp32 and bf16 at the same thread count.

    python benchmarks/autoregressive_speed.py --threads 2
    python benchmarks/autoregressive_speed.py --threads 2 --models pixelcnn,gated-pixelcnn --skip-training
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from genzoo.data.registry import dataset_info
from genzoo.models.registry import build_model
from genzoo.nn.masked import spatial_mask

INFO = dataset_info("binarized_mnist")  # (1, 28, 28), binary


# --- 1. sampling ---------------------------------------------------------------------------------
def time_sampling(name: str, n: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(name, INFO).eval()
    times, images = {}, {}
    for sampler in ("cached", "naive"):
        start = time.perf_counter()
        images[sampler] = model.sample(n, generator=torch.Generator().manual_seed(seed), sampler=sampler)
        times[sampler] = time.perf_counter() - start
    return {"model": name, "cached_s": times["cached"], "naive_s": times["naive"],
            "speedup": times["naive"] / times["cached"], "identical": torch.equal(images["cached"], images["naive"])}


# --- 2. the same PixelCNN written plainly -----------------------------------------------------------
class PlainMaskedConv(nn.Conv2d):
    def __init__(self, cin: int, cout: int, k: int, mask_type: str):
        super().__init__(cin, cout, k, padding=k // 2)
        self.register_buffer("mask", spatial_mask(k, k, mask_type), persistent=False)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PlainPixelCNN(nn.Module):
    """PixelCNN (mask-A 7x7, residual blocks 1x1 / masked 3x3 / 1x1, 1x1 output), one channel, Bernoulli."""

    def __init__(self, channels: int, num_blocks: int, output_channels: int, first_k: int, k: int):
        super().__init__()
        h = channels // 2
        self.conv_in = PlainMaskedConv(1, channels, first_k, "A")
        self.blocks = nn.ModuleList(nn.ModuleList([nn.Conv2d(channels, h, 1), PlainMaskedConv(h, h, k, "B"),
                                                   nn.Conv2d(h, channels, 1)]) for _ in range(num_blocks))
        self.conv_out = nn.Conv2d(channels, output_channels, 1)
        self.logits = nn.Conv2d(output_channels, 1, 1)

    def forward(self, x):  # (B, 1, H, W) -> (B,) nats
        t = self.conv_in(x)
        for reduce, conv, expand in self.blocks:
            t = t + expand(F.relu(conv(F.relu(reduce(F.relu(t))))))
        logits = self.logits(F.relu(self.conv_out(F.relu(t))))
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def plain_copy(model) -> PlainPixelCNN:
    c = model.config
    plain = PlainPixelCNN(c.channels, c.num_blocks, c.output_channels, c.first_kernel_size, c.kernel_size)
    state = {"conv_in.weight": model.conv_in.weight, "conv_in.bias": model.conv_in.bias,
             "conv_out.weight": model.conv_out.weight, "conv_out.bias": model.conv_out.bias,
             "logits.weight": model.head.out.weight, "logits.bias": model.head.out.bias}
    for i, block in enumerate(model.blocks):
        for j, layer in enumerate((block.reduce, block.conv, block.expand)):
            state[f"blocks.{i}.{j}.weight"], state[f"blocks.{i}.{j}.bias"] = layer.weight, layer.bias
    plain.load_state_dict({k: v.detach().clone().contiguous() for k, v in state.items()})
    return plain


def time_steps(step, batches: list[torch.Tensor], warmup: int) -> float:
    for x in batches[:warmup]:
        step(x)
    start = time.perf_counter()
    for x in batches[warmup:]:
        step(x)
    return (time.perf_counter() - start) / (len(batches) - warmup)


def training_throughput(batch_size: int, steps: int, warmup: int) -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    model = build_model("pixelcnn", INFO)
    plain = plain_copy(model)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.bernoulli(torch.full((batch_size, *INFO.shape), 0.3), generator=generator)
               for _ in range(warmup + steps)]
    genzoo_loss = model.loss(batches[0])["loss"].mean().item()
    plain_loss = plain(batches[0]).mean().item()
    if abs(genzoo_loss - plain_loss) > 1e-3 * abs(plain_loss):
        raise SystemExit(f"the plain PixelCNN is not the same network: loss {plain_loss} vs genzoo {genzoo_loss}")

    def genzoo_step(net, optimizer, precision):
        def step(x):
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                loss = net.loss(x.contiguous(memory_format=torch.channels_last))["loss"].float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    def plain_step(x):
        loss = plain(x).mean()
        plain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain_optimizer.step()

    plain_optimizer = torch.optim.Adam(plain.parameters(), lr=1e-3)
    rows = [{"implementation": "plain (NCHW, fp32, Adam)", "seconds": time_steps(plain_step, batches, warmup)}]
    for precision in ("fp32", "bf16"):
        net = build_model("pixelcnn", INFO).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
        rows.append({"implementation": f"genzoo (channels_last, {precision}, fused AdamW)",
                     "seconds": time_steps(genzoo_step(net, optimizer, precision), batches, warmup)})
    for row in rows:
        row["examples_per_s"] = batch_size / row["seconds"]
        row["ratio_vs_plain"] = rows[0]["seconds"] / row["seconds"]

    # 3. FLOPs of one training step (forward + backward), dense kernels
    net = build_model("pixelcnn", INFO)
    with FlopCounterMode(display=False) as counter:
        net.loss(batches[0])["loss"].mean().backward()
    flops = counter.get_total_flops()
    return rows, {"step_gflop": flops / 1e9, "bf16_step_s": rows[2]["seconds"], "fp32_step_s": rows[1]["seconds"]}


def matmul_peak(dtype: torch.dtype, size: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start) / 1e9  # GFLOP/s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="pixelcnn,gated-pixelcnn,pixelrnn,made,nade")
    parser.add_argument("--n", type=int, default=16, help="images per sampling run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"threads": args.threads, "torch": torch.__version__}

    print(f"## Sampling {args.n} images at 28x28 ({args.threads} threads, torch {torch.__version__})\n")
    print("| model | cached (s) | naive (s) | speed-up | identical samples |\n|---|---:|---:|---:|---|")
    results["sampling"] = []
    for name in args.models.split(","):
        row = time_sampling(name, args.n, seed=0)
        results["sampling"].append(row)
        print(f"| {name} | {row['cached_s']:.2f} | {row['naive_s']:.2f} | {row['speedup']:.1f}x | "
              f"{'yes' if row['identical'] else 'NO'} |", flush=True)
    if args.skip_training:
        return

    rows, step = training_throughput(args.batch_size, args.steps, args.warmup)
    print(f"\n## PixelCNN training step, batch {args.batch_size} ({args.steps} timed steps)\n")
    print("| implementation | step (ms) | examples/s | vs plain |\n|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['implementation']} | {1000 * row['seconds']:.1f} | {row['examples_per_s']:.0f} | "
              f"{row['ratio_vs_plain']:.2f}x |")
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"\n## Share of the matmul peak (one step: {step['step_gflop']:.1f} GFLOP, forward + backward)\n")
    print("| precision | matmul peak (GFLOP/s) | PixelCNN step (GFLOP/s) | share |\n|---|---:|---:|---:|")
    for precision in ("fp32", "bf16"):
        achieved = step["step_gflop"] / step[f"{precision}_step_s"]
        print(f"| {precision} | {peaks[precision]:.0f} | {achieved:.0f} | {100 * achieved / peaks[precision]:.0f}% |")
    results.update(training=rows, step=step, matmul_peak_gflops=peaks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
