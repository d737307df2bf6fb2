"""torchvision reference for kd's input-pipeline benchmark.

Times the standard PyTorch training input pipeline on the same pixels kd
reads, so kd's own loader (streaming `dataset.zarr`, random-resized crop,
flip, normalise, optional MixUp/CutMix) has a number to be compared with:
a `torch.utils.data.DataLoader` with `--workers` processes, shuffled batches
of `--batch`, whose Dataset reads image i from a NumPy memmap [N, C, H, W]
uint8 and applies torchvision.transforms.v2 `RandomResizedCrop(size,
scale, antialias=True)` + `RandomHorizontalFlip()` to the uint8 CHW tensor.
The collated batch is made float in [0, 1] and normalised per channel in
the main process (as kd does), then optionally mixed (`--mix`).

Input: `--memmap FILE.npy` (labels from `--labels`, else FILE's
`<stem>.labels.npy` if there, else zeros), or `--zarr DIR/dataset.zarr
--split train`: kd's split exported once, chunk by chunk, to `--cache-npy`
(default `DIR/<split>.npy`, labels beside it as `<split>.labels.npy`) and
reused while its shape matches.

Timing: `--warmup` batches (worker start-up, first reads) are not timed; the
next `--batches` are (keep it well above 2 x `--workers`, the batches the
workers prefetch during warm-up). Epochs restart as needed; incomplete last
batches are dropped. `--json` prints {"tool", "images_per_sec", "images",
"seconds", "workers", "threads", "batch", "size", "mix", "peak_rss_bytes",
"torch", "torchvision"}: threads is the main process's torch intra-op thread
count (DataLoader runs each worker on one); peak_rss_bytes sums VmHWM of the
main process and the workers (it counts the memmap pages each process
touched, i.e. shared page cache, once per process).
"""

import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

TV_VERSION = "0.26.0"  # the torchvision release paired with torch 2.11


def fail(msg, code=1):
    print(f"bench-data-torch: {msg}", file=sys.stderr)
    sys.exit(code)


class MemmapImages(torch.utils.data.Dataset):
    """Image i of a [N, C, H, W] uint8 .npy, cropped and flipped; the memmap is opened in each worker."""

    def __init__(self, path, labels, size, scale):
        import torchvision.transforms.v2 as T
        self.path, self.labels, self.mm = path, labels, None
        self.tf = T.Compose([T.RandomResizedCrop(size, scale=scale, antialias=True), T.RandomHorizontalFlip()])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.mm is None:
            self.mm = np.load(self.path, mmap_mode="r")
        return self.tf(torch.from_numpy(np.array(self.mm[i]))), int(self.labels[i])


def export_zarr(zarr_dir, split, cache):
    """Export `split` of kd's dataset.zarr to the .npy `cache` (+ labels), chunk by chunk; reuse a matching one."""
    import zarr
    try:
        g = zarr.open_group(zarr_dir, mode="r")
        imgs, labels = g[f"{split}/images"], g[f"{split}/labels"]
    except (FileNotFoundError, KeyError, ValueError) as e:
        fail(f"{zarr_dir} has no {split}/images and {split}/labels arrays ({type(e).__name__}: {e})")
    lab_path = cache[:-4] + ".labels.npy"
    if os.path.exists(cache) and os.path.exists(lab_path):
        mm = np.load(cache, mmap_mode="r")
        if mm.shape == imgs.shape and mm.dtype == np.uint8 and np.load(lab_path).shape == labels.shape:
            return cache, lab_path
        print(f"bench-data-torch: {cache} has shape {mm.shape}, not {imgs.shape}: re-exporting", file=sys.stderr)
    step = (imgs.shards or imgs.chunks)[0]
    step *= max(1, (256 << 20) // max(1, step * int(np.prod(imgs.shape[1:]))))  # ~256 MB at a time
    tmp = cache + ".partial"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=imgs.shape)
    t0 = time.time()
    for lo in range(0, imgs.shape[0], step):
        out[lo:lo + step] = imgs[lo:lo + step]
        print(f"export {min(lo + step, imgs.shape[0])}/{imgs.shape[0]} images, {time.time() - t0:.0f} s",
              file=sys.stderr, flush=True)
    out.flush()
    del out
    np.save(lab_path, labels[:].astype(np.int64))
    os.replace(tmp, cache)
    return cache, lab_path


def mixer(kind, classes):
    """Batch mixing on (images, labels) -> (images, soft labels); None for 'none'."""
    if kind == "none":
        return None
    import torchvision.transforms.v2 as T
    if hasattr(T, "MixUp"):
        return (T.MixUp if kind == "mixup" else T.CutMix)(num_classes=classes)

    def mix(x, y):  # fallback for old torchvision: same maths as MixUp / CutMix with alpha 1
        lam, perm = float(np.random.beta(1.0, 1.0)), torch.randperm(len(x))
        t = torch.nn.functional.one_hot(y, classes).float()
        if kind == "mixup":
            x = x.mul(lam).add_(x[perm], alpha=1 - lam)
        else:
            h, w = x.shape[-2:]
            cy, cx, r = np.random.randint(h), np.random.randint(w), np.sqrt(1 - lam)
            y0, y1 = max(cy - int(r * h / 2), 0), min(cy + int(r * h / 2), h)
            x0, x1 = max(cx - int(r * w / 2), 0), min(cx + int(r * w / 2), w)
            x = x.clone()
            x[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
            lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
        return x, t.mul(lam).add_(t[perm], alpha=1 - lam)
    return mix


def vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for options without one."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=Help)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--memmap", metavar="FILE.npy", help="images as a [N, C, H, W] uint8 .npy (memory-mapped)")
    src.add_argument("--zarr", metavar="DIR/dataset.zarr", help="kd's dataset; --split of it is exported to --cache-npy")
    ap.add_argument("--labels", metavar="FILE.npy", help="labels [N] for --memmap (default: <stem>.labels.npy, else zeros)")
    ap.add_argument("--split", default="train", help="split of --zarr to read")
    ap.add_argument("--cache-npy", metavar="PATH", help="where --zarr's split is exported (default: DIR/<split>.npy)")
    ap.add_argument("--size", type=int, default=224, help="output side of RandomResizedCrop")
    ap.add_argument("--scale", default="0.08,1", help="RandomResizedCrop area range lo,hi in (0, 1]")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (0: main process)")
    ap.add_argument("--batch", type=int, default=256, help="batch size")
    ap.add_argument("--batches", type=int, default=20, help="timed batches")
    ap.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    ap.add_argument("--mix", choices=["none", "mixup", "cutmix"], default="none", help="batch mixing in the main process")
    ap.add_argument("--mean", default="0.485,0.456,0.406", help="per-channel mean (one value: all channels)")
    ap.add_argument("--std", default="0.229,0.224,0.225", help="per-channel std (one value: all channels)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads of the main process (normalise, mix); 0: torch's default")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a line")
    a = ap.parse_args()
    try:
        import torchvision
    except ImportError as e:
        if e.name == "torchvision":
            print(f"torchvision is not installed: pip install --no-deps torchvision=={TV_VERSION}", file=sys.stderr)
            sys.exit(2)
        fail(f"torchvision cannot be imported: {e} (torchvision needs pillow: pip install pillow)", 2)
    try:
        lo, hi = (float(v) for v in a.scale.split(","))
        mean, std = ([float(v) for v in s.split(",")] for s in (a.mean, a.std))
    except ValueError:
        fail(f"--scale, --mean and --std take comma-separated numbers (--scale lo,hi), not {a.scale!r}, {a.mean!r}, {a.std!r}")
    if not 0 < lo <= hi <= 1:
        fail(f"--scale must be lo,hi with 0 < lo <= hi <= 1, not {a.scale}")
    if a.size < 1 or a.batch < 1 or a.batches < 1 or min(a.warmup, a.workers, a.threads) < 0:
        fail("--size, --batch and --batches must be at least 1, --warmup, --workers and --threads at least 0")
    if a.threads:
        torch.set_num_threads(a.threads)

    if a.zarr:
        if not os.path.isdir(a.zarr):
            fail(f"{a.zarr}: no such dataset.zarr folder")
        cache = a.cache_npy or os.path.join(os.path.dirname(os.path.abspath(a.zarr)), f"{a.split}.npy")
        if not cache.endswith(".npy"):
            fail(f"--cache-npy must end in .npy, not {cache}")
        path, lab_path = export_zarr(a.zarr, a.split, cache)
    else:
        path, lab_path = a.memmap, a.labels or os.path.splitext(a.memmap)[0] + ".labels.npy"
        if not os.path.isfile(path):
            fail(f"{path}: no such file")
        if a.labels and not os.path.isfile(lab_path):
            fail(f"{lab_path}: no such file")
    try:
        mm = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        fail(f"{path} is not a readable .npy file")
    if mm.ndim != 4 or mm.dtype != np.uint8:
        fail(f"{path} holds {mm.dtype} {mm.shape}, not uint8 [N, C, H, W]")
    n, c = mm.shape[:2]
    labels = np.load(lab_path).astype(np.int64) if os.path.isfile(lab_path) else np.zeros(n, np.int64)
    if labels.shape != (n,):
        fail(f"{lab_path} holds {labels.shape[0] if labels.ndim else 0} labels for {n} images")
    if n < a.batch:
        fail(f"{path} has {n} images, fewer than one batch of {a.batch}")
    mean, std = (v * c if len(v) == 1 else v for v in (mean, std))
    if len(mean) != c or len(std) != c:
        fail(f"--mean and --std need 1 or {c} values (the images have {c} channels)")
    mean, std = (torch.tensor(v).view(1, c, 1, 1) for v in (mean, std))
    del mm

    ds = MemmapImages(path, labels, a.size, (lo, hi))
    loader = torch.utils.data.DataLoader(ds, batch_size=a.batch, shuffle=True, num_workers=a.workers,
                                         drop_last=True, persistent_workers=a.workers > 0)
    mix = mixer(a.mix, max(2, int(labels.max()) + 1))
    it, pids = iter(loader), set()

    def next_batch():
        nonlocal it
        try:
            x, y = next(it)
        except StopIteration:  # next epoch
            it = iter(loader)
            x, y = next(it)
        pids.update(w.pid for w in getattr(it, "_workers", []))
        x = x.float().div_(255).sub_(mean).div_(std)
        return mix(x, y) if mix else (x, y)

    for _ in range(a.warmup):
        next_batch()
    t0 = time.perf_counter()
    for _ in range(a.batches):
        next_batch()
    dt = time.perf_counter() - t0
    rss = [vm_hwm(p) for p in [os.getpid(), *pids]]
    if None in rss:  # no /proc: the main process plus the largest reaped child
        del it
        rss = [resource.getrusage(w).ru_maxrss * 1024 for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    images = a.batches * a.batch
    r = {"tool": "torchvision", "images_per_sec": images / dt, "images": images, "seconds": dt,
         "workers": a.workers, "threads": torch.get_num_threads(), "batch": a.batch, "size": a.size,
         "mix": a.mix, "peak_rss_bytes": sum(rss),
         "torch": torch.__version__, "torchvision": torchvision.__version__}
    if a.json:
        print(json.dumps(r))
    else:
        print(f"torchvision {r['torchvision']} (torch {r['torch']}): {r['images_per_sec']:.1f} images/s, "
              f"{images} images in {dt:.2f} s, {a.workers} workers, {r['threads']} threads, batch {a.batch}, {a.size} px, mix {a.mix}, "
              f"peak RSS {sum(rss) / 2**20:.0f} MiB")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        fail("interrupted", 130)
