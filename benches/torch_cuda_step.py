#!/usr/bin/env python3
"""PyTorch CUDA eager fp32 (TF32 off) yardstick for `unreid bench --device gpu` on the same
machine (issue 16): the training step of ../shared/bench/torch_train_step.py (same model, losses,
Adam, PK labels) on cuda, or inference, plus one fp32 matmul (cuBLAS, TF32 off) for the card's
attainable FP32 rate. cudnn.benchmark on (as fast-reid sets it; --benchmark 0 turns it off).
Each step is timed between cuda.synchronize calls and reads the loss (as unreid's step does);
prints `RESULT` lines with the median.

    python3 benches/torch_cuda_step.py --arch resnet50 --batch 64 --height 256 --width 128

torch_train_step.py is looked up beside this file, then in ../shared/bench."""
import argparse, statistics, time, sys, os
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [here, os.path.join(here, "..", "..", "shared", "bench")]
import torch, torch.nn.functional as F
from torch_train_step import ReidNet, euclidean, softmax_triplet, pk_labels

ap = argparse.ArgumentParser()
ap.add_argument("--arch", default="resnet50"); ap.add_argument("--batch", type=int, default=64)
ap.add_argument("--height", type=int, default=256); ap.add_argument("--width", type=int, default=128)
ap.add_argument("--warmup", type=int, default=5); ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--benchmark", type=int, default=1); ap.add_argument("--mode", default="train")
ap.add_argument("--matmul", type=int, default=4096)
a = ap.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = bool(a.benchmark)
dev = torch.device("cuda")
print("torch", torch.__version__, torch.cuda.get_device_name(0), "tf32", torch.backends.cuda.matmul.allow_tf32,
      torch.backends.cudnn.allow_tf32, "cudnn.benchmark", torch.backends.cudnn.benchmark, flush=True)
if a.matmul:
    n = a.matmul
    A = torch.randn(n, n, device=dev); B = torch.randn(n, n, device=dev)
    for _ in range(3): C = A @ B
    torch.cuda.synchronize(); ts = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); C = A @ B; e.record(); torch.cuda.synchronize(); ts.append(s.elapsed_time(e))
    ms = statistics.median(ts)
    print(f"RESULT torch matmul {n}^3 fp32 (tf32 off): {ms:.3f} ms, {2*n**3/ms/1e9:.1f} TFLOP/s", flush=True)
ls = 1 if a.arch == "resnet50" else 2
torch.manual_seed(0)
net = ReidNet(a.arch, ls, 751).to(dev)
x = torch.randn(a.batch, 3, a.height, a.width, device=dev)
times = []
if a.mode == "infer":
    net.eval()
    for step in range(a.warmup + a.steps):
        torch.cuda.synchronize(); t0 = time.perf_counter()
        with torch.inference_mode():
            _, bn, _ = net(x)
        torch.cuda.synchronize(); dt = time.perf_counter() - t0
        if step >= a.warmup: times.append(dt)
else:
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=3.5e-4, weight_decay=5e-4)
    for step in range(a.warmup + a.steps):
        labels = pk_labels(a.batch, step, 751).to(dev)
        torch.cuda.synchronize(); t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        pooled, bn, logits = net(x)
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1) + softmax_triplet(euclidean(pooled, pooled), labels)
        loss.backward(); opt.step()
        l = loss.item()  # unreid's step reads the loss too
        torch.cuda.synchronize(); dt = time.perf_counter() - t0
        if step >= a.warmup: times.append(dt)
med = statistics.median(times)
print(f"RESULT torch cuda arch={a.arch} b{a.batch} {a.height}x{a.width} mode={a.mode} cudnn.benchmark={a.benchmark} "
      f"median_ms={med*1e3:.2f} ips={a.batch/med:.1f} min_ms={min(times)*1e3:.2f} max_ms={max(times)*1e3:.2f} "
      f"peak_mem_mb={torch.cuda.max_memory_allocated()/2**20:.0f}", flush=True)
