"""
Teach a tiny checkpoint to answer given (image, prompt) pairs with given target texts.

A random-weight model only produces gibberish, so tests could never reach the path where the
node parses a valid plan. Some tens of Adam steps on the standard VLM objective (cross-entropy
on the answer tokens only) make the tiny model reproduce each target exactly under greedy
decoding, through the same processor, prompt layout and generate() as inference.
"""

import pathlib
import time
from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModelForImageTextToText

from ..engine.local.processors import load_processor
from ..engine.local.teacher_forcing import target_log_probs, teacher_forced_batch

# Measured over seeds 0-11 of every family: three targets, two of them for one prompt and told
# apart by the image alone, reach STOP_PROB within 126 steps (Idefics2; the others within 93),
# and the test suite's three engine targets within 66. DEFAULT_STEPS is that with a margin.
DEFAULT_STEPS = 200
DEFAULT_LR = 5e-3
STOP_PROB = 0.9
# Gradient-norm clipping (the transformers Trainer default) stops the loss spikes that Adam
# otherwise hits late in training at this learning rate (seen with Idefics2).
MAX_GRAD_NORM = 1.0


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    """
    Return the parameters to fit: all but the vision encoder's.

    The vision encoder stays frozen, as in LLaVA-style instruction tuning. With random weights
    it already maps different images to different features, whereas training it at these
    learning rates can collapse it to an image-independent output (seen with Florence-2's
    DaViT), after which no target that depends on the image alone can be learnt.
    """
    vision = model.get_encoder(modality='image')
    if vision is not model:
        vision.requires_grad_(False)
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def _min_answer_prob(model, logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the lowest probability the model gives to any answer token (teacher-forced)."""
    log_probs, answer = target_log_probs(model, logits.detach(), labels)
    return log_probs[answer].min().exp().item()


def train_tiny(model_dir, samples: Sequence[tuple[np.ndarray, str, str]],
               steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR) -> dict:
    """
    Fit the checkpoint in model_dir to the samples with full-batch Adam and save it back.

    Training stops before `steps` once every answer token has probability >= STOP_PROB: a token
    above 0.5 is the argmax, so greedy decoding then reproduces every target exactly, and 0.9
    leaves a wide margin for the tiny numerical differences between this padded teacher-forced
    batch and cached generation. The defaults were measured (see DEFAULT_STEPS).

    Dropout stays off (eval mode) because the aim is exact memorisation, not generalisation.
    Torch runs single-threaded meanwhile: for tensors this small, handing work to other threads
    costs more than the arithmetic, and far more on a busy machine.

    Returns the first and final loss, the lowest answer-token probability, the optimizer steps
    run and the seconds taken.
    """
    model_dir = pathlib.Path(model_dir)
    processor = load_processor(str(model_dir))
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    model.eval()
    batch = teacher_forced_batch(processor, model, samples)
    parameters = trainable_parameters(model)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.perf_counter()
    losses = []
    try:
        for step in range(steps + 1):
            output = model(**batch, use_cache=False)
            losses.append(output.loss.item())
            min_prob = _min_answer_prob(model, output.logits, batch['labels'])
            if min_prob >= STOP_PROB or step == steps:
                break
            optimizer.zero_grad()
            output.loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(model_dir)
    return {'initial_loss': losses[0], 'loss': losses[-1], 'min_answer_prob': min_prob,
            'steps': step, 'seconds': time.perf_counter() - start}
