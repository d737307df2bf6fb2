"""PyTorch eager twins of kd's presets, timed like crates/student/benches/presets.rs.

Called by that bench (one model per call) so both sides run in one `make
bench`: same architecture (the parameter count is printed so the bench can
check it equals kd's), same batch, same thread count, same step (forward in
train mode, cross-entropy on every head, backward, AdamW). Prints one JSON
line: {"params": N, "train_s": median seconds per step, "infer_s": median
seconds per eval forward}.

Written for this bench from the papers' descriptions (ViT/DeiT, ResNet); no
torchvision or timm needed.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VITS = {
    # name: (patch, dim, depth, heads, mlp_ratio, drop_path)
    "vit-c32": (4, 256, 7, 4, 2.0, 0.1),
    "deit-tiny": (16, 192, 12, 3, 4.0, 0.1),
    "deit-small": (16, 384, 12, 6, 4.0, 0.1),
}


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
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = DropPath(drop_path)

    def forward(self, x):
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.drop(self.proj(a))
        return x + self.drop(self.fc2(F.gelu(self.fc1(self.norm2(x)))))


class Vit(nn.Module):
    """ViT with a class token and `dist` distillation tokens (DeiT)."""

    def __init__(self, name, size, chans, classes, dist):
        super().__init__()
        p, d, depth, heads, ratio, dp = VITS[name]
        n = (size // p) ** 2
        self.patch_embed = nn.Conv2d(chans, d, p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.dist_tokens = nn.Parameter(torch.zeros(1, dist, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + dist + n, d))
        rates = [dp * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(d, heads, ratio, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, classes)
        self.head_dist = nn.ModuleList(nn.Linear(d, classes) for _ in range(dist))

    def forward(self, x):
        b = x.shape[0]
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.dist_tokens.expand(b, -1, -1), x], 1)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return [self.head(x[:, 0])] + [h(x[:, 1 + i]) for i, h in enumerate(self.head_dist)]


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


class ResNet18(nn.Module):
    """cnn-r18: ResNet-18 widths, the stem chosen by image size as kd does."""

    def __init__(self, size, chans, classes):
        super().__init__()
        k, s, pool = (3, 1, False) if size < 64 else (3, 2, False) if size < 128 else (7, 2, True)
        self.stem = nn.Sequential(
            nn.Conv2d(chans, 64, k, s, k // 2, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            *([nn.MaxPool2d(3, 2, 1)] if pool else []),
        )
        layers, cin = [], 64
        for i, w in enumerate([64, 128, 256, 512]):
            layers += [Basic(cin, w, 1 if i == 0 else 2), Basic(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        return [self.fc(self.layers(self.stem(x)).mean((2, 3)))]


def median_seconds(reps, f):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--chans", type=int, default=3)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--dist", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.model in VITS:
        m = Vit(a.model, a.size, a.chans, a.classes, a.dist)
    elif a.model == "cnn-r18":
        m = ResNet18(a.size, a.chans, a.classes)
    else:
        raise SystemExit(f"bench-torch: no PyTorch twin of '{a.model}'")
    x = torch.randn(a.batch, a.chans, a.size, a.size)
    y = torch.randint(0, a.classes, (a.batch,))
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)

    def train():
        m.train()
        opt.zero_grad()
        outs = m(x)
        loss = sum(F.cross_entropy(o, y) for o in outs) / len(outs)
        loss.backward()
        opt.step()

    def infer():
        m.eval()
        with torch.no_grad():
            m(x)

    print(json.dumps({
        "params": sum(p.numel() for p in m.parameters()),
        "train_s": median_seconds(a.reps, train),
        "infer_s": median_seconds(a.reps, infer),
    }))


if __name__ == "__main__":
    main()
