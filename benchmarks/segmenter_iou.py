"""Mean IoU of the segmenters against the 30 ground-truth DreamBooth masks (one per training image).

    python benchmarks/segmenter_iou.py                       # grabcut, and grounded-sam if its weights load
    python benchmarks/segmenter_iou.py --segmenters grabcut --data-dir /path/to/dreambooth

Reads $TLORA_BENCH_DATA (or --data-dir). Each segmenter is prompted with the subject's class word, as in
`tlora-bench evaluate`. The figure for grabcut is quoted in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from tlora_bench.concepts import bundled_manifest, load_image, load_mask, resolve_data_root
from tlora_bench.errors import TloraBenchError
from tlora_bench.metrics.segmenters import load_segmenter, mask_iou


def _machine(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU, {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenters", default="grabcut,grounded-sam", help="comma-separated segmenter names")
    parser.add_argument("--data-dir", default=None, help="DreamBooth folder (default: $TLORA_BENCH_DATA)")
    parser.add_argument("--device", default="auto", help="device for grounded-sam: cpu, cuda or auto")
    args = parser.parse_args()
    root = resolve_data_root(args.data_dir)
    concepts = [c for c in bundled_manifest().concepts.values() if c.mask_path(root) is not None]
    print(f"{len(concepts)} subjects with a ground-truth mask in {root}; machine: {_machine(args.device)}")
    for name in args.segmenters.split(","):
        try:
            segmenter = load_segmenter(name.strip(), device=args.device)
        except TloraBenchError as e:
            print(f"\n{name}: skipped ({e})")
            continue
        print(f"\n{name}: {segmenter.identity}")
        ious, start = [], time.perf_counter()
        for concept in concepts:
            image = load_image(concept.train_image_path(root))
            truth = load_mask(concept.mask_path(root), image.size)
            iou = mask_iou(segmenter.segment(image, concept.class_word), truth)
            ious.append(iou)
            print(f"  {concept.id:<20} {concept.class_word:<16} {image.width}x{image.height}  IoU {iou:.3f}")
        seconds = (time.perf_counter() - start) / len(concepts)
        print(f"{name}: mean IoU {np.mean(ious):.3f} (median {np.median(ious):.3f}, min {np.min(ious):.3f}) over "
              f"{len(ious)} subjects; {seconds:.2f} s per image")


if __name__ == "__main__":
    main()
