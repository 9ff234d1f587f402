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
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlm_ros.engine.chat import build_inputs

# Measured over seeds 0-11 of every family: three targets, two of them for one prompt and told
# apart by the image alone, reach STOP_PROB within 126 steps (Idefics2; the others within 93),
# and the test suite's three engine targets within 66. DEFAULT_STEPS is that with a margin.
DEFAULT_STEPS = 200
DEFAULT_LR = 5e-3
STOP_PROB = 0.9
# Gradient-norm clipping (the transformers Trainer default) stops the loss spikes that Adam
# otherwise hits late in training at this learning rate (seen with Idefics2).
MAX_GRAD_NORM = 1.0
IGNORE_INDEX = -100
# Model inputs with one entry per prompt token; all others (pixels, tiles) are per image.
TOKEN_KEYS = ('input_ids', 'attention_mask', 'cross_attention_mask', 'mm_token_type_ids',
              'token_type_ids')


def _answer_ids(processor, model, target: str) -> torch.Tensor:
    """Tokenize a target and close it with the token that stops generation."""
    eos = model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    ids = processor.tokenizer(target, add_special_tokens=False)['input_ids']
    return torch.tensor([*ids, eos])


def _pad_right(rows: list[torch.Tensor], value) -> torch.Tensor:
    """Stack sequences of different lengths, padding after the end of each."""
    length = max(row.shape[0] for row in rows)
    padded = [torch.cat([row, row.new_full((length - row.shape[0], *row.shape[1:]), value)])
              for row in rows]
    return torch.stack(padded)


def _decoder_only_batch(inputs, answers: list[torch.Tensor], pad_id: int) -> dict:
    """
    Append each answer right after its row's prompt tokens and mask the prompt out of the loss.

    Prompt tokens are taken where the attention mask is set, whatever the padding side, and rows
    are right-padded, so every row keeps the positions it has in an unpadded inference call.
    Per-token inputs other than ids (attention and cross-attention masks) extend their last
    prompt position over the answer, as generate() does for every new token.
    """
    batch = {key: value for key, value in inputs.items() if key not in TOKEN_KEYS}
    keys = [key for key in TOKEN_KEYS if key in inputs]
    rows = {key: [] for key in [*keys, 'labels']}
    for index, answer in enumerate(answers):
        keep = inputs['attention_mask'][index].bool()
        for key in keys:
            prompt = inputs[key][index][keep]
            extra = answer if key == 'input_ids' else prompt[-1:].expand(
                len(answer), *prompt.shape[1:])
            rows[key].append(torch.cat([prompt, extra]))
        rows['labels'].append(torch.cat([torch.full((int(keep.sum()),), IGNORE_INDEX), answer]))
    pads = {'input_ids': pad_id, 'labels': IGNORE_INDEX}
    batch.update({key: _pad_right(value, pads.get(key, 0)) for key, value in rows.items()})
    return batch


def training_batch(processor, model, samples: Sequence[tuple]) -> dict:
    """
    Build one batch of model inputs with labels from (image, prompt, target) samples.

    The prompt side is encoded by chat.build_inputs, exactly as inference encodes it. For an
    encoder-decoder the answer becomes the decoder labels (the model shifts them right behind
    its decoder start token); for a decoder-only model it continues the prompt.
    """
    images, prompts, targets = zip(*samples, strict=True)
    inputs = build_inputs(processor, images, prompts)
    answers = [_answer_ids(processor, model, target) for target in targets]
    if model.config.is_encoder_decoder:
        return {**inputs, 'labels': _pad_right(answers, IGNORE_INDEX)}
    return _decoder_only_batch(inputs, answers, processor.tokenizer.pad_token_id)


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
    if not model.config.is_encoder_decoder:
        logits, labels = logits[:, :-1], labels[:, 1:]
    answer = labels != IGNORE_INDEX
    log_probs = logits.detach().float().log_softmax(-1)
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked[answer].min().exp().item()


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
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    model.eval()
    batch = training_batch(processor, model, samples)
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
