"""From cached text and video embeddings to the similarity a retrieval protocol variant ranks.

The variants (milnce.eval.retrieval_eval options, all side by side in milnce.eval.protocol_table):
- score: raw dot product (the original) or the dot product of L2-normalised embeddings (cosine);
- captions: one per video (the ground truth on the diagonal) or all of them (caption i's video is text_to_video[i]);
- inference: plain ranking of the similarity (the original) or dual-softmax (milnce.eval.retrieval.dual_softmax),
  whose temperature defaults to 0.01 on cosine scores (CAMoE's 1/100) and 1.0 on raw dot products (the scale the
  MIL-NCE loss puts its softmax on), unless one is given.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from milnce.eval.retrieval import dual_softmax
from milnce.inference import l2_normalize

CAPTIONS = ("one", "all")
INFERENCES = ("plain", "dual_softmax")
DUAL_SOFTMAX_FORMULA = "S'[q,g] = S[q,g] * exp(S[q,g]/T) / sum_q' exp(S[q',g]/T)  (softmax over the queries)"


def resolve_temperature(normalize: bool, temperature: Optional[float]) -> float:
    """The dual-softmax temperature in effect: the one given, else 0.01 on cosine scores and 1.0 on raw dot."""
    if temperature is not None:
        return float(temperature)
    return 0.01 if normalize else 1.0


def base_similarity(video: np.ndarray, text: np.ndarray, normalize: bool) -> np.ndarray:
    """text × video, float32 as the original np.dot; L2-normalised first when `normalize`."""
    if normalize:
        video, text = l2_normalize(video), l2_normalize(text)
    return np.dot(text, video.T)


def ranked_similarity(base: np.ndarray, inference: str, temperature: float) -> np.ndarray:
    """What is ranked along each row (query): `base` itself, or its dual-softmax re-weighting."""
    if inference not in INFERENCES:
        raise ValueError(f"unknown retrieval inference '{inference}' (valid: {', '.join(INFERENCES)})")
    return base if inference == "plain" else dual_softmax(base, temperature)


def inference_card(inference: str, temperature: float) -> Dict[str, Any]:
    if inference == "plain":
        return {"inference": "plain", "inference_rule": "rank each query's row of the similarity"}
    return {"inference": "dual_softmax", "dual_softmax_temperature": temperature,
            "inference_rule": DUAL_SOFTMAX_FORMULA,
            "transductive": "each score uses every test query (the softmax over the query axis): not the "
                            "original protocol, never the default"}
