"""Synthetic ImageNet-shaped image folder, for testing kd on data larger than memory.

Writes `OUT/train/<class>/<index>.png` and `OUT/val/<class>/<index>.png`, the
layout kd's folder importer reads (`val/` becomes the test split), so that
`kd data` can import a dataset of ImageNet's shape (by default 200,000 RGB
224 x 224 training images, 30 GB decoded) and kd's streaming input pipeline
can be exercised on a `dataset.zarr` that does not fit in memory.

Each image is a smooth class-dependent pattern (a few low-frequency sinusoids
and a colour gradient whose frequencies, orientations and colours depend on
the class, jittered by a per-image RNG) quantised to steps of 4, plus sparse grey noise, so the classes are
learnable and a 224 px PNG takes ~35 KB (~4x smaller than raw) instead of the
~150 KB a random-pixel image takes. Image i of a split has class i % K and is seeded
from (seed, split, i): the files are byte-identical across runs and worker
counts. PNGs are written by a small numpy + zlib encoder (no PIL needed).

Existing non-empty files are skipped, so an interrupted run resumes where it
stopped (files are written under a hidden temporary name, then renamed, so
none is ever half-written). `OUT/.synthetic.json` records the settings and a
resume with different ones is refused.
"""

import argparse
import json
import os
import signal
import struct
import sys
import time
import zlib
from multiprocessing import Pool

import numpy as np

SPLITS = {"train": 0, "val": 1}
BLOCK = 64  # images per worker task
ZLEVEL = 6


def class_params(seed, k):
    """Per class: 3 waves (spatial frequency, colour), a gradient colour and a base colour."""
    rng = np.random.default_rng([seed, 2, k])
    ang = rng.uniform(0, np.pi, 3)
    freq = rng.uniform(1.0, 6.0, 3)  # cycles per image
    return dict(fx=freq * np.cos(ang), fy=freq * np.sin(ang),
                col=rng.uniform(-1, 1, (3, 3)), grad=rng.uniform(-60, 60, 3),
                base=rng.uniform(70, 185, 3))


def make_image(seed, split, i, classes, size):
    """The uint8 [S, S, 3] image `i` of `split`, and its class."""
    k = i % classes
    p = class_params(seed, k)
    rng = np.random.default_rng([seed, SPLITS[split], i])
    t = np.arange(size, dtype=np.float32) / size
    y, x = t[:, None], t[None, :]
    jit = rng.uniform(0.85, 1.15, (2, 3))
    phase = rng.uniform(0, 2 * np.pi, 3)
    img = np.empty((size, size, 3), np.float32)
    img[:] = p["base"] + rng.normal(0, 12, 3)
    for w in range(3):
        wave = np.sin(2 * np.pi * (p["fx"][w] * jit[0, w] * x + p["fy"][w] * jit[1, w] * y) + phase[w])
        img += (wave[..., None] * p["col"][w] * rng.uniform(25, 45)).astype(np.float32)
    g = rng.uniform(-1, 1, 2)  # per-image gradient direction
    img += ((x - 0.5) * g[0] + (y - 0.5) * g[1])[..., None] * p["grad"]
    img = np.floor(img * 0.25) * 4  # quantise to steps of 4: PNG ~4x smaller than raw
    # grey noise of +-4 on ~10% of the pixels, so images are not purely smooth
    noise = rng.integers(-4, 5, (size, size, 1), dtype=np.int8) * (rng.random((size, size, 1)) < 0.1)
    return np.clip(img + noise, 0, 255).astype(np.uint8), k


def png_bytes(img):
    """Encode an RGB uint8 [H, W, 3] array as PNG (8-bit, filter 1 = sub)."""
    h, w, _ = img.shape
    rows = img.reshape(h, w * 3)
    f = rows.copy()
    f[:, 3:] -= rows[:, :-3]  # uint8 arithmetic wraps mod 256, as PNG wants
    raw = np.concatenate([np.ones((h, 1), np.uint8), f], axis=1).tobytes()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, ZLEVEL)) + chunk(b"IEND", b""))


def png_decode(data):
    """Decode a PNG written by png_bytes (RGB, 8-bit, filters 0/1) back to [H, W, 3]."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w, h = 8, b"", None, None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body), "bad CRC"
        if kind == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * 3)
    rows = raw[:, 1:].copy()
    for r in np.nonzero(raw[:, 0] == 1)[0]:
        rows[r] = np.cumsum(rows[r].reshape(w, 3), axis=0, dtype=np.uint8).reshape(-1)
    assert set(np.unique(raw[:, 0])) <= {0, 1}, "unsupported filter"
    return rows.reshape(h, w, 3)


def path_of(out, split, i, classes):
    return os.path.join(out, split, f"c{i % classes:04d}", f"{i:07d}.png")


def work(task):
    """Write images [lo, hi) of a split; returns (images in the block, images written, its bytes on disk)."""
    out, seed, split, lo, hi, classes, size = task
    written = nbytes = 0
    for i in range(lo, hi):
        path = path_of(out, split, i, classes)
        if os.path.exists(path) and os.path.getsize(path) > 0:
            nbytes += os.path.getsize(path)
            continue
        data = png_bytes(make_image(seed, split, i, classes, size)[0])
        tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        written, nbytes = written + 1, nbytes + len(data)
    return hi - lo, written, nbytes


class Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except for options without one."""

    def _get_help_string(self, action):
        return action.help if action.default in (None, False) else super()._get_help_string(action)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=Help)
    ap.add_argument("--out", required=True, help="output folder (gets train/ and val/ class folders)")
    ap.add_argument("--train", type=int, default=200000, help="number of training images")
    ap.add_argument("--val", type=int, default=10000, help="number of val images (kd's test split)")
    ap.add_argument("--classes", type=int, default=100, help="number of classes (image i has class i %% K)")
    ap.add_argument("--size", type=int, default=224, help="image side S: RGB S x S")
    ap.add_argument("--seed", type=int, default=0, help="seed; same seed, same bytes")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="worker processes")
    ap.add_argument("--verify", type=int, default=0, metavar="N",
                    help="after writing, decode N files per split and compare them to regenerated pixels")
    a = ap.parse_args()
    err = None
    if a.classes < 1 or a.classes > 9999:
        err = "--classes must be in 1..9999"
    elif a.train < a.classes:
        err = f"--train must be at least --classes ({a.classes}): kd refuses a class folder present in val/ only"
    elif a.val < 1:
        err = "--val must be at least 1: kd refuses a train/ folder alone"
    elif not 8 <= a.size <= 4096:
        err = "--size must be in 8..4096"
    elif a.workers < 1 or a.seed < 0 or a.verify < 0:
        err = "--workers must be at least 1, --seed and --verify non-negative"
    if err:
        sys.exit(f"make-synthetic-images: {err}")

    settings = dict(train=a.train, val=a.val, classes=a.classes, size=a.size, seed=a.seed)
    try:
        os.makedirs(a.out, exist_ok=True)
        mf = os.path.join(a.out, ".synthetic.json")
        if os.path.exists(mf):
            with open(mf) as f:
                old = json.load(f)
            if old != settings:
                sys.exit(f"make-synthetic-images: {a.out} was made with {old}, not {settings}; use another --out")
        for split, n in (("train", a.train), ("val", a.val)):
            for k in range(min(n, a.classes)):
                d = os.path.join(a.out, split, f"c{k:04d}")
                os.makedirs(d, exist_ok=True)
                for stale in (e for e in os.listdir(d) if e.startswith(".") and e.endswith(".png.tmp")):
                    os.remove(os.path.join(d, stale))  # left by an interrupted run
        with open(mf, "w") as f:
            json.dump(settings, f)
    except OSError as e:
        sys.exit(f"make-synthetic-images: cannot write to {a.out}: {e.strerror}")

    tasks = [(a.out, a.seed, split, lo, min(lo + BLOCK, n), a.classes, a.size)
             for split, n in (("train", a.train), ("val", a.val)) for lo in range(0, n, BLOCK)]
    total, done, written, nbytes, next_report = a.train + a.val, 0, 0, 0, 0.05
    t0 = time.time()
    try:
        with Pool(a.workers, signal.signal, (signal.SIGINT, signal.SIG_IGN)) as pool:  # Ctrl-C: main only
            for n, w, b in pool.imap_unordered(work, tasks):
                done, written, nbytes = done + n, written + w, nbytes + b
                if done >= next_report * total or done == total:
                    dt = time.time() - t0
                    print(f"{done}/{total} images ({done / total:.0%}), {written / max(dt, 1e-9):.1f} images/s "
                          f"written, {nbytes / 1e9:.2f} GB on disk", file=sys.stderr, flush=True)
                    next_report = (done / total // 0.05 + 1) * 0.05
    except OSError as e:
        sys.exit(f"make-synthetic-images: writing {e.filename or a.out} failed: {e.strerror} (rerun to resume)")
    dt = time.time() - t0
    for split, n in (("train", a.train), ("val", a.val)):
        for i in np.linspace(0, n - 1, min(a.verify, n)).astype(int):
            path = path_of(a.out, split, i, a.classes)
            try:
                with open(path, "rb") as f:
                    ok = np.array_equal(png_decode(f.read()), make_image(a.seed, split, i, a.classes, a.size)[0])
            except (OSError, AssertionError, ValueError, struct.error, zlib.error) as e:
                ok = f"({type(e).__name__}: {e})"
            if ok is not True:
                sys.exit(f"make-synthetic-images: {path} does not decode to its pixels {ok or ''}".rstrip())
    print(f"{total} images ({written} written, {total - written} already there), {nbytes} bytes "
          f"({nbytes / total / 1e3:.1f} KB/image), {dt:.1f} s, {written / max(dt, 1e-9):.1f} images/s, "
          f"decoded size {total * 3 * a.size * a.size / 1e9:.2f} GB"
          + (f", {a.verify} per split verified" if a.verify else ""), file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("make-synthetic-images: interrupted (rerun the same command to resume)")
