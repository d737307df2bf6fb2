#!/usr/bin/env bash
# The input pipeline side by side: `kd bench data` and the torchvision
# DataLoader (scripts/bench-data-torch.py) on the same pixels of a dataset
# artifact, on the same number of cores, resized crop + flip (and mixing
# when MIX is set); then the ratio. kd runs twice: as training reads a
# dataset that fits the data cache (in memory), and read by chunk through a
# small cache (KD_DATA_CACHE=$SMALL_CACHE), as it reads one that does not.
#
#   scripts/bench-data.sh DATASET_DIR
#   THREADS=2 BATCH=256 BATCHES=20 MIX=mixup scripts/bench-data.sh DATASET_DIR
#
# torchvision reads a NumPy memmap exported once beside the dataset
# artifact (NPY, default DATASET_DIR.train.npy: the split's size on disk).
set -euo pipefail
ds=${1:?usage: scripts/bench-data.sh DATASET_DIR}
[ -f "$ds/manifest.json" ] || { echo "bench-data: $ds is not a finished dataset artifact (no manifest.json)" >&2; exit 2; }
KD=${KD:-target/release/kd}
PY=${KD_PYTHON:-python3}
THREADS=${THREADS:-$(nproc)}
BATCH=${BATCH:-256}
BATCHES=${BATCHES:-20}
MIX=${MIX:-none}
SMALL_CACHE=${SMALL_CACHE:-256M}
common=(--batch "$BATCH" --batches "$BATCHES" --json)
kd_mem=$(KD_THREADS=$THREADS "$KD" bench data --dataset "$ds" --mix "$MIX" "${common[@]}")
kd_chunk=$(KD_DATA_CACHE=$SMALL_CACHE KD_THREADS=$THREADS "$KD" bench data --dataset "$ds" --mix "$MIX" "${common[@]}" 2>/dev/null)
NPY=${NPY:-${ds%/}.train.npy}
tv=$("$PY" scripts/bench-data-torch.py --zarr "$ds/dataset.zarr" --split train --cache-npy "$NPY" \
    --workers "$THREADS" --threads 1 --mix "$MIX" "${common[@]}")
"$PY" - "$kd_mem" "$kd_chunk" "$tv" <<'PY'
import json, sys
mem, chunk, tv = (json.loads(s) for s in sys.argv[1:])
gib = lambda b: f"{b / 2**30:.2f} GiB" if b else "?"
print(f"{'pipeline':34} {'images/s':>9} {'decoded B/img':>13} {'peak RSS':>10}")
for name, r in [("kd, in memory", mem), ("kd, read by chunk", chunk),
                (f"torchvision DataLoader ({tv['workers']} workers)", tv)]:
    print(f"{name:34} {r['images_per_sec']:9.0f} {r.get('decoded_bytes_per_image', 0):13.0f} {gib(r.get('peak_rss_bytes')):>10}")
print(f"kd / torchvision: {mem['images_per_sec'] / tv['images_per_sec']:.2f}x in memory, "
      f"{chunk['images_per_sec'] / tv['images_per_sec']:.2f}x read by chunk "
      f"({mem['size'][0]} px, {mem['crop']}, mix {mem['mix']}, batch {mem['batch']}, {mem['threads']} threads)")
PY
