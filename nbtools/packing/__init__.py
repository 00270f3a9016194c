"""Packed DPO pairs: one ``[prompt, chosen, rejected]`` row per pair (``[prompt, chosen_prompt, chosen,
rejected_prompt, rejected]`` for image-contrast pairs), images and videos encoded once, reference
log-probs computed once. See ``step.packed_dpo_step`` for the trainer hook; ``unpacked`` holds
TRL's unpacked layout (two rows per pair) extended with videos and rejected images, beside the packed one."""

from .layout import PackedPieces, PackedPreferenceCollator, pack_pieces
from .logps import PackedLogps, packed_logps, separate_logps
from .loss import PACKED_LOSS_TYPES, packed_loss, pair_losses
from .mask import packed_attention_mask
from .positions import packed_position_ids
from .unpacked import VisionPreferenceCollator
from .ref_cache import (
    ReferenceFingerprint,
    ReferenceLogpsStore,
    pair_key,
    precompute_reference_logps,
    reference_fingerprint,
)
from .step import PackedStepResult, packed_dpo_step, reference_logps
from .support import PackingSupport, packing_supported
from .vision_cache import EncodingCounter, vision_features_reusable

__all__ = [
    "PACKED_LOSS_TYPES",
    "EncodingCounter",
    "PackedLogps",
    "PackedPieces",
    "PackedPreferenceCollator",
    "PackedStepResult",
    "PackingSupport",
    "ReferenceFingerprint",
    "ReferenceLogpsStore",
    "VisionPreferenceCollator",
    "packed_loss",
    "pair_losses",
    "pack_pieces",
    "packed_attention_mask",
    "packed_dpo_step",
    "packed_logps",
    "packed_position_ids",
    "packing_supported",
    "pair_key",
    "precompute_reference_logps",
    "reference_fingerprint",
    "reference_logps",
    "separate_logps",
    "vision_features_reusable",
]
