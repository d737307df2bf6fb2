"""PyTorch twins of kd's presets, timed like crates/student/benches/presets.rs.

Called by that bench (one model per call) so both sides run in one `make
bench`: same architecture (the parameter count is printed so the bench can
check it equals kd's), same batch, same thread count, same step (forward in
train mode, cross-entropy on every head, backward, AdamW). Prints one JSON
line: {"params": N, "train_s": median seconds per step, "infer_s": median
seconds per eval forward} for PyTorch eager, which runs the same libtorch
kernels as kd, op for op.

`--compile` adds the same two timings with the model (and the AdamW step)
compiled by `torch.compile` (inductor: C++/OpenMP on the CPU, Triton on
CUDA): "compiled_train_s", "compiled_infer_s", and "compile_s", the seconds
the warm-up calls took. Compile time is excluded from the timings: a fresh
model and optimiser are compiled and run for warm-up steps (the first
compiles, the second recompiles the optimiser once its state exists) before
the timed ones, so the columns compare steady-state steps as a long training
run sees them. When compiling fails (no C++ compiler, an op inductor cannot
lower), both are null and "compile_error" says why: the bench prints '-'
and the reason instead of stopping, since eager still compares.

`--profile` times nothing: it runs one warm-up train step, then profiles 3
train steps with torch.profiler and writes key_averages() (sorted by self
CPU time, top 25; on CUDA a second table by self device time) to stderr or
`--profile-out`. kd calls the same libtorch ops as the eager twin, so the
eager profile stands in for kd's own per-op profile (tch has no profiler),
except for the involution: kd runs it as one autograd node of a C++ shim
(crates/teachers/cpp/involution.cpp, hand-written loops and a
single-buffer backward), the twin as K*K slices of libtorch ops (kd's
`involution_slices`, its path before the shim; PyTorch has no involution
op), so the involution nets' eager columns and profiles show what the shim
replaced. With `--compile` the profile is of the compiled step, inductor's
kernels named (cpp.enable_kernel_profile) so the fusions can be read off.

`--device cuda` runs either on the GPU, synchronising before every timer
read (CUDA calls return before the kernels finish).

Written for this bench from the papers' descriptions (ViT/DeiT, CivT's
stems, ResNet, RedNet/involution) and kd's Rust (crates/student/src/vit.rs
and stem.rs, crates/teachers/src/cnn.rs, rednet.rs, involution.rs); no
torchvision or timm needed.
"""

import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VITS = {
    # name: (patch, dim, depth, heads, mlp_ratio, drop_path), as Config::preset
    "vit-test": (4, 16, 1, 2, 2.0, 0.0),
    "vit-tiny": (4, 96, 4, 3, 2.0, 0.1),
    "vit-small": (4, 128, 6, 4, 2.0, 0.1),
    "vit-c32": (4, 256, 7, 4, 2.0, 0.1),
    "deit-tiny": (16, 192, 12, 3, 4.0, 0.1),
    "deit-small": (16, 384, 12, 6, 4.0, 0.1),
}

CNNS = {
    # name: (stem_width, widths, blocks), as CnnConfig::preset
    "cnn-tiny": (8, [8, 16], [1, 1]),
    "cnn-small": (32, [32, 64, 128], [1, 1, 1]),
    "cnn-r18": (64, [64, 128, 256, 512], [2, 2, 2, 2]),
}

REDNETS = {
    # name: (stem_width, mids, blocks, expansion, kernel, group_channels,
    # reduction, zero_init_residual), as RedNetConfig::preset
    "rednet-tiny": (8, [16, 16], [1, 1], 2, 3, 16, 4, False),
    "rednet-small": (32, [16, 32, 64], [1, 1, 1], 4, 7, 16, 4, False),
    "rednet-26": (64, [64, 128, 256, 512], [1, 2, 4, 1], 4, 7, 16, 4, True),
}

# CivT stem widths (crates/student/src/stem.rs).
CONV_WIDTHS = (24, 48)
INV_WIDTH, INV_KERNEL, INV_GROUP_CHANNELS, INV_REDUCTION = 32, 5, 16, 4


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.p
        return x * keep / (1 - self.p)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, drop_path):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = round(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = DropPath(drop_path)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.proj(a))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


def involution(x, w, k, stride, groups):
    """kd's `involution_slices` (crates/teachers/src/involution/mod.rs; kd's
    networks now run a C++ shim with the same arithmetic): the sum of K*K
    strided slices of the zero-padded input, each times its tap of the
    per-pixel kernels `w` [B, G, K*K, H', W'], accumulated in place (addcmul
    does not save the accumulator for backward, so one buffer serves)."""
    b, c, h, wd = x.shape
    ho, wo = w.shape[-2:]
    p = (k - 1) // 2
    xp = F.pad(x, (p, p, p, p)).view(b, groups, c // groups, h + 2 * p, wd + 2 * p)
    taps = w.unsqueeze(2).unbind(3)
    acc = None
    for i in range(k):
        rows = xp[:, :, :, i : i + stride * (ho - 1) + 1 : stride]
        for j in range(k):
            xs = rows[..., j : j + stride * (wo - 1) + 1 : stride]
            wk = taps[i * k + j]
            acc = xs * wk if acc is None else acc.addcmul_(xs, wk)
    return acc.view(b, c, ho, wo)


class Involution(nn.Module):
    """Involution with its kernel generator: 1x1 conv C -> C/r (no bias), BN,
    ReLU, 1x1 conv -> K*K*G (bias), from the average-pooled input when
    strided (ceil mode, so the kernel grid is the output's ceil(H / s))."""

    def __init__(self, channels, kernel, stride, group_channels, reduction):
        super().__init__()
        self.k, self.stride = kernel, stride
        self.groups = max(channels // group_channels, 1)
        red = max(channels // reduction, 1)
        self.reduce = nn.Conv2d(channels, red, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(red)
        self.span = nn.Conv2d(red, kernel * kernel * self.groups, 1)

    def forward(self, x):
        s = self.stride
        src = F.avg_pool2d(x, s, s, ceil_mode=True, count_include_pad=False) if s > 1 else x
        w = self.span(F.relu(self.reduce_bn(self.reduce(src))))
        b, _, ho, wo = w.shape
        return involution(x, w.view(b, self.groups, self.k * self.k, ho, wo), self.k, s, self.groups)


def stem_conv(cin, cout, k, stride, bias=False):
    """stem.rs's conv: padding k/2, none for a patchifying conv (k == stride)."""
    return nn.Conv2d(cin, cout, k, stride, 0 if k == stride else k // 2, bias=bias)


def stem_strides(patch):
    """Stride of the stems' second layer and of their projection."""
    return (2, patch // 2) if patch % 2 == 0 else (1, patch)


class ConvStem(nn.Module):
    def __init__(self, chans, patch, dim):
        super().__init__()
        s2, sp = stem_strides(patch)
        w1, w2 = CONV_WIDTHS
        self.conv1, self.bn1 = stem_conv(chans, w1, 3, 1), nn.BatchNorm2d(w1)
        self.conv2, self.bn2 = stem_conv(w1, w2, 3, s2), nn.BatchNorm2d(w2)
        self.proj = stem_conv(w2, dim, sp, sp, bias=True)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return self.proj(y).flatten(2).transpose(1, 2)


class InvolutionStem(nn.Module):
    def __init__(self, chans, patch, dim):
        super().__init__()
        s2, sp = stem_strides(patch)
        self.conv1, self.bn1 = stem_conv(chans, INV_WIDTH, 3, 1), nn.BatchNorm2d(INV_WIDTH)
        self.inv = Involution(INV_WIDTH, INV_KERNEL, s2, INV_GROUP_CHANNELS, INV_REDUCTION)
        self.bn2 = nn.BatchNorm2d(INV_WIDTH)
        self.proj = stem_conv(INV_WIDTH, dim, sp, sp, bias=True)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.inv(y)))
        return self.proj(y).flatten(2).transpose(1, 2)


class Vit(nn.Module):
    """ViT with a class token and `dist` distillation tokens (DeiT), or with
    CivT's stems (`stem="conv-involution"`): patch tokens are the sum of a
    conv and an involution stem, each distillation token the mean of the
    stem named in `token_stems` (conv, involution or both), no free
    distillation-token parameter and no patch conv."""

    def __init__(self, name, size, chans, classes, dist, stem="patch", token_stems=()):
        super().__init__()
        p, d, depth, heads, ratio, dp = VITS[name]
        n = (size // p) ** 2
        self.civt = stem == "conv-involution"
        self.token_stems = list(token_stems)
        if self.civt:
            assert len(self.token_stems) == dist, "one token stem per distillation token"
            self.conv_stem = ConvStem(chans, p, d)
            self.inv_stem = InvolutionStem(chans, p, d)
        else:
            self.patch_embed = nn.Conv2d(chans, d, p, stride=p)
            self.dist_tokens = nn.Parameter(torch.zeros(1, dist, d)) if dist > 0 else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + dist + n, d))
        rates = [dp * i / (depth - 1) if depth > 1 else dp for i in range(depth)]
        self.blocks = nn.ModuleList(Block(d, heads, ratio, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, classes)
        self.head_dist = nn.ModuleList(nn.Linear(d, classes) for _ in range(dist))

    def forward(self, x):
        b = x.shape[0]
        seq = [self.cls_token.expand(b, -1, -1)]
        if self.civt:
            c, i = self.conv_stem(x), self.inv_stem(x)
            patches = c + i
            src = {"conv": c, "involution": i, "both": patches}
            seq += [src[t].mean(1, keepdim=True) for t in self.token_stems]
            seq.append(patches)
        else:
            if self.dist_tokens is not None:
                seq.append(self.dist_tokens.expand(b, -1, -1))
            seq.append(self.patch_embed(x).flatten(2).transpose(1, 2))
        x = torch.cat(seq, 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return [self.head(x[:, 0])] + [h(x[:, 1 + i]) for i, h in enumerate(self.head_dist)]


def image_stem(chans, width, size):
    """cnn.rs's ImageStem, strided by the image size: 3x3/1 below 64 px,
    3x3/2 below 128 px, else ImageNet's 7x7/2 + 3x3/2 max-pool."""
    k, s, pool = (3, 1, False) if size < 64 else (3, 2, False) if size < 128 else (7, 2, True)
    return nn.Sequential(
        nn.Conv2d(chans, width, k, s, k // 2, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        *([nn.MaxPool2d(3, 2, 1)] if pool else []),
    )


class Basic(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


class Cnn(nn.Module):
    """cnn-*: ResNet basic blocks (cnn-r18 is ResNet-18), stride 2 at the
    start of every stage after the first, the stem chosen by image size."""

    def __init__(self, name, size, chans, classes):
        super().__init__()
        stem, widths, blocks = CNNS[name]
        self.stem = image_stem(chans, stem, size)
        layers, cin = [], stem
        for s, (w, n) in enumerate(zip(widths, blocks)):
            for b in range(n):
                layers.append(Basic(cin, w, 2 if s > 0 and b == 0 else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return [self.fc(self.layers(self.stem(x)).mean((2, 3)))]


class Bottleneck(nn.Module):
    """RedNet's 1x1 conv -> involution -> 1x1 conv, the shortcut
    average-pooled (when strided) before its 1x1 conv."""

    def __init__(self, cin, mid, cout, stride, kernel, gc, reduction, zero_init):
        super().__init__()
        self.stride = stride
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2 = Involution(mid, kernel, stride, gc, reduction)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        if zero_init:
            # As kd's rednet-26: every block starts as the identity (an
            # untrained deep involution stack overflows otherwise, and
            # inf/NaN arithmetic is no fair timing).
            nn.init.zeros_(self.bn3.weight)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.down is None:
            short = x
        else:
            s = self.stride
            xs = F.avg_pool2d(x, s, s, ceil_mode=True, count_include_pad=False) if s > 1 else x
            short = self.down(xs)
        return F.relu(y + short)


class RedNet(nn.Module):
    """rednet-*: the image stem, stages of involution bottlenecks (outputs
    mid * expansion, stride 2 at the start of every stage after the first)."""

    def __init__(self, name, size, chans, classes):
        super().__init__()
        stem, mids, blocks, exp, kernel, gc, red, zero_init = REDNETS[name]
        self.stem = image_stem(chans, stem, size)
        layers, cin = [], stem
        for s, (mid, n) in enumerate(zip(mids, blocks)):
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                layers.append(Bottleneck(cin, mid, mid * exp, stride, kernel, gc, red, zero_init))
                cin = mid * exp
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return [self.fc(self.layers(self.stem(x)).mean((2, 3)))]


def build(a):
    """The twin of `a.model`, seeded so the eager and compiled copies start
    from the same weights."""
    torch.manual_seed(0)
    if a.model in VITS:
        stems = a.token_stems.split(",") if a.token_stems else []
        if a.stem == "conv-involution" and not a.token_stems:
            # kd's defaults: one token per teacher of the demo's ensemble
            # (cnn, then involution); a single token means both stems.
            stems = {0: [], 1: ["both"], 2: ["conv", "involution"]}.get(a.dist)
            if stems is None:
                raise SystemExit("bench-torch: give --token-stems for more than 2 tokens")
        m = Vit(a.model, a.size, a.chans, a.classes, a.dist, a.stem, stems)
    elif a.model in CNNS:
        m = Cnn(a.model, a.size, a.chans, a.classes)
    elif a.model in REDNETS:
        m = RedNet(a.model, a.size, a.chans, a.classes)
    else:
        raise SystemExit(f"bench-torch: no PyTorch twin of '{a.model}'")
    return m.to(a.device)


def steps(m, opt, x, y, compiled=False):
    """(train step, eval forward) closures; with `compiled`, the forward
    (and with it AOTAutograd's backward) and the AdamW step go through
    torch.compile. dynamic=False: the shapes never change, so a static
    graph, no symbolic-shape guards."""
    fwd = torch.compile(m, dynamic=False) if compiled else m
    opt_step = torch.compile(opt.step, dynamic=False) if compiled else opt.step

    def train():
        m.train()
        opt.zero_grad()
        outs = fwd(x)
        loss = sum(F.cross_entropy(o, y) for o in outs) / len(outs)
        loss.backward()
        opt_step()

    def infer():
        m.eval()
        with torch.no_grad():
            fwd(x)

    return train, infer


def keep_freed_memory():
    """glibc's mallopt as kd-core's malloc.rs sets it at kd's startup (and
    the presets bench before timing kd): large blocks stay in the heap
    instead of being mmapped and zeroed by the kernel afresh every step, so
    the two sides' allocators behave alike and the columns compare kernels."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 1 << 30)
        libc.mallopt(m_trim_threshold, 2**31 - 1)
    except (OSError, AttributeError):
        pass  # not glibc: kd's call does nothing there either


def median_seconds(reps, f, sync, warmup=1):
    for _ in range(warmup):
        f()
    ts = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        f()
        sync()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def profile(a, m, x, y, sync):
    """key_averages of 3 eager (or, with --compile, compiled) train steps,
    after one untimed step (first-call allocations, lazy AdamW state, and
    compilation stay out of the table)."""
    import warnings

    from torch.profiler import ProfilerActivity, profile as prof

    warnings.filterwarnings("ignore", module="torch.profiler")
    if a.compile:
        import torch._inductor.config as inductor

        inductor.cpp.enable_kernel_profile = True
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    train, _ = steps(m, opt, x, y, a.compile)
    for _ in range(3 if a.compile else 1):
        train()
    sync()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device.startswith("cuda") else [])
    with prof(activities=acts) as p:
        for _ in range(3):
            train()
        sync()
    ka = p.key_averages()
    what = f"{a.model}" + (f" (stem {a.stem})" if a.model in VITS else "")
    head = (
        f"# {'compiled' if a.compile else 'eager'} {what}, {a.chans}x{a.size}x{a.size}, batch {a.batch}, "
        f"3 train steps (forward, CE on every head, backward, AdamW), {a.threads} thread(s), "
        f"torch {torch.__version__}, device {a.device}; params {sum(q.numel() for q in m.parameters())}\n"
    )
    # Inductor's kernel names list what they fuse: give them room.
    width = 110 if a.compile else 55
    out = head + ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=width) + "\n"
    if a.device.startswith("cuda"):
        out += ka.table(sort_by="self_device_time_total", row_limit=25, max_name_column_width=width) + "\n"
    if a.profile_out:
        with open(a.profile_out, "w") as f:
            f.write(out)
    else:
        sys.stderr.write(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--chans", type=int, default=3)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--dist", type=int, default=1, help="distillation tokens (students)")
    ap.add_argument("--stem", choices=["patch", "conv-involution"], default="patch")
    ap.add_argument("--token-stems", default="", help="conv|involution|both per token, comma-separated")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--compile", action="store_true", help="also time the torch.compile'd model")
    ap.add_argument("--profile", action="store_true", help="per-op profile of 3 train steps, no timings")
    ap.add_argument("--profile-out", help="write the profile here instead of stderr")
    a = ap.parse_args()
    keep_freed_memory()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    m = build(a)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(a.batch, a.chans, a.size, a.size, generator=g).to(dev)
    y = torch.randint(0, a.classes, (a.batch,), generator=g).to(dev)
    if a.profile:
        profile(a, m, x, y, sync)
        return
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    train, infer = steps(m, opt, x, y)
    res = {
        "params": sum(p.numel() for p in m.parameters()),
        "train_s": median_seconds(a.reps, train, sync),
        "infer_s": median_seconds(a.reps, infer, sync),
    }
    if a.compile:
        del m, opt, train, infer
        res.update(compiled_train_s=None, compiled_infer_s=None)
        try:
            m = build(a)
            opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
            train, infer = steps(m, opt, x, y, compiled=True)
            t = time.perf_counter()
            for f in (train, train, train, infer, infer):
                f()
            sync()
            res["compile_s"] = time.perf_counter() - t
            res["compiled_train_s"] = median_seconds(a.reps, train, sync, warmup=0)
            res["compiled_infer_s"] = median_seconds(a.reps, infer, sync, warmup=0)
        except Exception as e:  # noqa: BLE001 - any failure to compile is reported, not fatal
            msg = str(e).strip().splitlines()
            res["compile_error"] = f"{type(e).__name__}: {msg[0] if msg else ''}"[:300]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
