"""Speed and fidelity of vision-token compression on the real ViT-S/14 (DINOv2-small).

For each merge schedule and kept fraction (75/50/25/10% of the 257 tokens at 224 px), and for
VisionZip-style selection at the same budgets: images/s against the unmodified encoder measured in
the same run (settings interleaved round by round, warm medians, batch 8; each round times the
next batch of easy-vqa images), CLS and size-weighted mean-token cosine against the unmodified
output on skimage photos, and 1-NN shape/colour accuracy (leave-one-out, cosine on CLS) on the
easy-vqa images the timed rounds encoded. Also the prefill length of a small LLaVA built
from config. Prints a table, writes JSON and a speed-fidelity PNG.

    TOKENIZERS_PARALLELISM=false .venv/bin/python benchmarks/bench_vision.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ctxzip.budget import Budget
from ctxzip.compressors.vision.backbone import converted_folder, preprocess
from ctxzip.compressors.vision.llava import LlavaVisionCompression, build_test_llava
from ctxzip.compressors.vision.merge import VisionMergeCompressor, plan_for
from ctxzip.compressors.vision.select import VisionSelectCompressor
from ctxzip.compressors.vision.tokens import weighted_mean

RATES = (0.75, 0.5, 0.25, 0.1)
SCHEDULES = ("constant", "delayed", "decreasing", "front")
SHAPES = {"circle", "rectangle", "triangle"}


def photos(n: int) -> list[np.ndarray]:
    from skimage import data

    names = [
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "motorcycle_left",
        "retina",
        "cat",
        "camera",
        "page",
        "text",
    ]
    out = []
    for name in names:
        try:
            image = getattr(data, name)()
        except Exception:  # some need pooch downloads
            continue
        out.append(image)
    while len(out) < n:
        out = out + out
    return out[:n]


def easy_vqa(n: int) -> tuple[list[Any], list[str], list[str]]:
    """n test images with their shape and colour labels (from the questions' answers)."""
    from importlib.util import find_spec

    from PIL import Image

    spec = find_spec("easy_vqa")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("easy-vqa is not installed: pip install --no-deps easy-vqa==1.0")
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "test"
    questions = json.loads((root / "questions.json").read_text())
    shape: dict[int, str] = {}
    colour: dict[int, str] = {}
    for question, answer, image_id in questions:
        if answer in SHAPES:
            shape[image_id] = answer
        elif question.startswith("what is the color"):
            colour[image_id] = answer
    ids = sorted(set(shape) & set(colour))[:n]
    images = [Image.open(root / "images" / f"{i}.png").convert("RGB") for i in ids]
    return images, [shape[i] for i in ids], [colour[i] for i in ids]


def knn_accuracy(embeddings: torch.Tensor, labels: list[str]) -> float:
    x = F.normalize(embeddings.float(), dim=-1)
    sim = x @ x.T
    sim.fill_diagonal_(-2.0)
    nearest = sim.argmax(dim=-1).tolist()
    return sum(labels[j] == labels[i] for i, j in enumerate(nearest)) / len(labels)


def compute_ratio(setting: tuple[str, str, float], n_tokens: int = 257) -> float:
    """Encoder multiply-adds of the unmodified run over this setting's (ViT-S: C=384, 12 layers,
    MLP 4C; attention runs on a layer's input tokens, the MLP on the merged ones)."""
    c, layers = 384, 12

    def attn(n: int) -> float:
        return 4 * n * c * c + 2 * n * n * c

    def mlp(n: int) -> float:
        return 8 * n * c * c

    full = layers * (attn(n_tokens) + mlp(n_tokens))
    if setting[0] != "vision-merge":
        return 1.0
    plan, _ = plan_for(n_tokens, Budget(rate=setting[2]), layers, setting[1])
    cost, n = 0.0, n_tokens
    for r in plan:
        cost += attn(n)
        n -= r
        cost += mlp(n)
    return full / cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--knn-images", type=int, default=96, help="easy-vqa images (their batches are timed)"
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)
    converted_folder()

    merger = VisionMergeCompressor(device=args.device, batch_size=args.batch)
    selector = VisionSelectCompressor(device=args.device, batch_size=args.batch)
    from transformers import Dinov2Model

    plain = Dinov2Model.from_pretrained(str(converted_folder()), dtype=merger.dtype)
    plain = plain.to(merger.device).eval()

    pixels = preprocess(photos(args.batch), 224, device=str(merger.device), dtype=merger.dtype)
    vqa_images, vqa_shape, vqa_colour = easy_vqa(args.knn_images)
    vqa_pixels = preprocess(vqa_images, 224, device=str(merger.device), dtype=merger.dtype)

    settings: list[tuple[str, str, float]] = [("unmodified", "-", 1.0)]
    settings += [("vision-merge", s, r) for s in SCHEDULES for r in RATES]
    settings += [("vision-select", "dominant+contextual", r) for r in RATES]

    def run(setting: tuple[str, str, float], batch: torch.Tensor) -> Any:
        method, schedule, rate = setting
        if method == "unmodified":
            with torch.inference_mode():
                tokens = plain(pixel_values=batch).last_hidden_state
            return tokens, torch.ones(tokens.shape[:2])
        compressor = merger if method == "vision-merge" else selector
        if method == "vision-merge":
            merger.schedule = schedule
        result = compressor.compress(batch, budget=Budget(rate=rate))
        return result.tokens, result.sizes

    # warm up, then interleave settings round by round so load drifts hit all alike; each
    # round's timed batch is the next 8 easy-vqa images, whose CLS tokens feed the kNN scores
    for setting in settings:
        run(setting, pixels)
    # the order rotates every round, so no setting always runs right after the same one;
    # process CPU time is kept next to wall time: on a shared CPU it is the steadier measure
    times: dict[tuple[str, str, float], list[float]] = {s: [] for s in settings}
    cpu: dict[tuple[str, str, float], list[float]] = {s: [] for s in settings}
    cls_seen: dict[tuple[str, str, float], list[torch.Tensor]] = {s: [] for s in settings}
    n_rounds = vqa_pixels.shape[0] // args.batch
    for i in tqdm(range(n_rounds), desc="timed rounds", file=sys.stderr):
        batch = vqa_pixels[i * args.batch : (i + 1) * args.batch]
        shift = i % len(settings)
        for setting in settings[shift:] + settings[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            out, _ = run(setting, batch)
            if merger.device.type == "cuda":
                torch.cuda.synchronize()
            times[setting].append(time.perf_counter() - start)
            cpu[setting].append(time.process_time() - start_cpu)
            cls_seen[setting].append(out[:, 0].float().cpu())
    n_knn = n_rounds * args.batch
    vqa_shape, vqa_colour = vqa_shape[:n_knn], vqa_colour[:n_knn]

    base_tokens, _ = run(settings[0], pixels)
    rows = []
    for setting in settings:
        tokens, sizes = run(setting, pixels)
        cls_cos = F.cosine_similarity(tokens[:, 0].float(), base_tokens[:, 0].float()).mean()
        mean_cos = F.cosine_similarity(
            weighted_mean(tokens.float(), sizes.float().to(tokens.device)),
            base_tokens[:, 1:].float().mean(1),
        ).mean()
        cls_all = torch.cat(cls_seen[setting])
        median = statistics.median(times[setting])
        rows.append(
            {
                "method": setting[0],
                "schedule": setting[1],
                "kept_rate": setting[2],
                "tokens_out": int(tokens.shape[1]),
                "images_per_s": args.batch / median,
                "cls_cosine": float(cls_cos),
                "mean_cosine": float(mean_cos),
                "knn_shape": knn_accuracy(cls_all, vqa_shape),
                "knn_colour": knn_accuracy(cls_all, vqa_colour),
                "compute_ratio": compute_ratio(setting),
                "cpu_seconds": statistics.median(cpu[setting]),
            }
        )
    base_speed = rows[0]["images_per_s"]
    for row in rows:
        row["speedup"] = row["images_per_s"] / base_speed
        row["cpu_speedup"] = rows[0]["cpu_seconds"] / row["cpu_seconds"]

    header = (
        f"{'method':<14}{'schedule':<21}{'kept':>6}{'tokens':>7}{'img/s':>8}{'speedup':>8}{'CPU-t':>7}"
        f"{'MACs':>7}{'CLS cos':>9}{'mean cos':>9}{'kNN shape':>10}{'kNN colour':>11}"
    )
    print(
        f"device={merger.device} dtype={merger.dtype} batch={args.batch} 224px "
        f"timed rounds={n_rounds} knn_images={n_knn}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['method']:<14}{r['schedule']:<21}{r['kept_rate']:>6.2f}{r['tokens_out']:>7}"
            f"{r['images_per_s']:>8.1f}{r['speedup']:>7.2f}x{r['cpu_speedup']:>6.2f}x"
            f"{r['compute_ratio']:>6.2f}x"
            f"{r['cls_cosine']:>9.4f}"
            f"{r['mean_cosine']:>9.4f}{r['knn_shape']:>10.3f}{r['knn_colour']:>11.3f}"
        )
    print(llava_prefill_lengths())

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_vision.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "bench_vision.png")
    print(f"wrote {out / 'bench_vision.json'} and {out / 'bench_vision.png'}")


def llava_prefill_lengths() -> str:
    """LM prefill length of the small LLaVA (real ViT-S tower) per kept fraction."""
    model = build_test_llava(real_vision=False)
    pixels = torch.zeros(1, 3, 224, 224)
    ids = torch.cat(
        [
            torch.ones(1, 1, dtype=torch.long),
            torch.full((1, 256), model.config.image_token_id),
            torch.tensor([[5, 6, 7]]),
        ],
        1,
    )
    parts = [f"LLaVA prefill tokens: full {ids.shape[1]}"]
    for rate in RATES:
        with LlavaVisionCompression(model, "select", Budget(rate=rate)) as zip_:
            length = zip_.prepare_inputs(ids, pixels)["input_ids"].shape[1]
        parts.append(f"{rate:.0%} -> {length}")
    return ", ".join(parts)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows[1:]:
        groups.setdefault(f"{r['method']} {r['schedule']}", []).append(r)
    for ax, key, xlabel in (
        (axes[0], "cpu_speedup", "speedup vs unmodified encoder (process CPU time)"),
        (axes[1], "compute_ratio", "encoder multiply-adds saved (ratio)"),
    ):
        for label, group in groups.items():
            ax.plot([g[key] for g in group], [g["cls_cosine"] for g in group], "o-", label=label)
        ax.axhline(0.99, color="grey", lw=0.5, ls="--")
        ax.set_xlabel(xlabel)
    axes[0].set_ylabel("CLS cosine vs unmodified")
    axes[0].legend(fontsize=7)
    fig.suptitle("ViT-S/14, batch 8, 224 px: speed vs fidelity per schedule")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
