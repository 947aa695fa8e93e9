"""`grounded-sam`: Grounding-DINO finds the box of the class word, SAM turns that box into a mask.

The T-LoRA authors' README points to Grounded-SAM for the masks of masked IS (docs/decisions.md section 5). Both
models run through transformers and load from a hub id (cached) or a local folder saved with
`save_pretrained`. The highest-scoring box wins: a generated image may show other objects of the same class
("a {0} with another dog"), and the concept is the most confident detection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tlora_bench.hub import offline_when_unreachable
from tlora_bench.metrics.extractors import (
    CACHE_HINT,
    local_weights_identity,
    resolve_device,
    resolve_dtype,
    weights_error,
)

DETECTOR_ID = "IDEA-Research/grounding-dino-tiny"
SAM_ID = "facebook/sam-vit-base"
BOX_THRESHOLD = 0.3  # Grounded-SAM's demo defaults
TEXT_THRESHOLD = 0.25
_FIX = (f"{CACHE_HINT}, pass --weights grounding-dino=PATH and --weights sam=PATH to local copies, "
        "or use --segmenter grabcut")


def _identity(source: str) -> str:
    return local_weights_identity(source) if Path(source).exists() else f"hub:{source}"


def _load(what: str, source: str, load):
    """Load one transformers model and its processor; a missing or unreadable copy is a one-line error."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no per-weight progress bars in an evaluation log, during the load only
    try:
        with offline_when_unreachable():
            return load(source)
    except Exception as e:  # hub, config and checkpoint errors all mean "bad weights"
        raise weights_error(what, f"'{source}'", e, _FIX) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


class GroundedSamSegmenter:
    """Grounding-DINO box for "<class word>." then a SAM mask inside that box; nothing found -> empty mask."""

    name = "grounded-sam"

    def __init__(self, detector, detector_processor, sam, sam_processor, sources: tuple[str, str],
                 device: torch.device, dtype: torch.dtype) -> None:
        self.detector, self.detector_processor = detector, detector_processor
        self.sam, self.sam_processor = sam, sam_processor
        self.sources, self.device, self.dtype = sources, device, dtype
        self._identity = (f"grounded-sam(detector={_identity(sources[0])},sam={_identity(sources[1])},"
                          f"box={BOX_THRESHOLD},text={TEXT_THRESHOLD},dtype={dtype})")

    @property
    def identity(self) -> str:
        return self._identity

    @classmethod
    def load(cls, detector: str | None = None, sam: str | None = None, device: str = "cpu",
             dtype: str = "fp32") -> GroundedSamSegmenter:
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor, SamModel, SamProcessor

        sources = (str(detector or DETECTOR_ID), str(sam or SAM_ID))
        torch_device, torch_dtype = resolve_device(device), resolve_dtype(dtype)
        det_model, det_processor = _load("Grounding-DINO", sources[0], lambda s: (
            AutoModelForZeroShotObjectDetection.from_pretrained(s), AutoProcessor.from_pretrained(s)))
        sam_model, sam_processor = _load("SAM", sources[1], lambda s: (
            SamModel.from_pretrained(s), SamProcessor.from_pretrained(s)))
        det_model = det_model.to(torch_device, torch_dtype).eval()
        sam_model = sam_model.to(torch_device, torch_dtype).eval()
        return cls(det_model, det_processor, sam_model, sam_processor, sources, torch_device, torch_dtype)

    def _inputs(self, batch) -> dict:
        """Move a processor's output to the device; floating tensors also take the model's dtype."""
        return {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    @torch.inference_mode()
    def best_box(self, image: Image.Image, class_word: str) -> list[float] | None:
        """The highest-scoring (x0, y0, x1, y1) box for the class word, in pixels, or None."""
        text = f"{class_word.strip().lower()}."  # Grounding-DINO expects lower-case phrases ending with '.'
        batch = self.detector_processor(images=image, text=text, return_tensors="pt")
        outputs = self.detector(**self._inputs(batch))
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        found = self.detector_processor.post_process_grounded_object_detection(
            outputs, batch["input_ids"].to(self.device), threshold=BOX_THRESHOLD, text_threshold=TEXT_THRESHOLD,
            target_sizes=[(image.height, image.width)])[0]
        if len(found["scores"]) == 0:
            return None
        return found["boxes"][int(found["scores"].argmax())].tolist()

    @torch.inference_mode()
    def segment(self, image: Image.Image, class_word: str) -> np.ndarray:
        image = image.convert("RGB")
        box = self.best_box(image, class_word)
        if box is None:
            return np.zeros((image.height, image.width), dtype=bool)
        batch = self.sam_processor(image, input_boxes=[[box]], return_tensors="pt")
        outputs = self.sam(**self._inputs(batch), multimask_output=False)
        masks = self.sam_processor.image_processor.post_process_masks(
            outputs.pred_masks.float().cpu(), batch["original_sizes"], batch["reshaped_input_sizes"])
        return masks[0][0, 0].numpy().astype(bool)
