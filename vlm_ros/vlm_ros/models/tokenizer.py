"""
A small byte-level BPE tokenizer for the tiny test checkpoints.

Real VLM tokenizers are tens of megabytes and cannot be fetched offline, so each tiny checkpoint
gets a tokenizer trained in milliseconds on a corpus of the robot-planning vocabulary. Byte-level
BPE can encode any text (no unknown tokens), and the merges learnt on the corpus keep the JSON
plans short, which keeps training and generation fast.
"""

from collections.abc import Iterable, Mapping

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Upper bound; the corpus is small, so training stops at about 490 tokens.
VOCAB_SIZE = 512

# Words the planner prompts and JSON plans are made of, so that BPE learns merges for them.
CORPUS = (
    'pick up the red block',
    'pick up the blue cube and place it in the bin',
    'place it in the bin',
    'put the green ball on the table',
    'move the yellow cup to the left of the plate',
    'open the drawer, then close it',
    'what is on the table? describe the image.',
    'Plan the steps for the instruction. Answer in JSON.',
    '{"steps": [{"skill": "pick", "target": "red block"}]}',
    '{"steps": [{"skill": "place", "target": "bin"}, {"skill": "done"}]}',
    '{"instruction": "pick up the red block", "steps": []}',
    '{"skill": "move", "target": [0.25, -1.5, 3], "args": {"speed": 0.1}}',
    '0 1 2 3 4 5 6 7 8 9 10 42 100 3.14 -0.5',
    'User: Assistant: USER: ASSISTANT: user assistant system',
    'You are a helpful assistant. a caption: there is an object in the picture',
    '[ ] { } " : , . - _ ( ) ! ? \' / \\ \n',
)


def build_tokenizer(
    *,
    bos_token: str | None,
    eos_token: str,
    pad_token: str,
    named_tokens: Mapping[str, str] | None = None,
    special_tokens: Iterable[str] = (),
    add_bos: bool = False,
    padding_side: str = 'left',
) -> PreTrainedTokenizerFast:
    """
    Train a byte-level BPE on CORPUS and wrap it the way the processors expect.

    named_tokens become model-specific attributes (e.g. {'image_token': '<image>'} gives
    tokenizer.image_token and tokenizer.image_token_id), which several processors read instead of
    hard-coding the token. special_tokens are further atomic tokens (chat markers, image
    boundaries). add_bos mirrors tokenizers (Llama, Mistral) that prepend BOS when encoding.
    Decoder-only models generate after the last position of every row, so their batched prompts
    must be left-padded; encoder-decoder models keep the usual right padding.
    """
    named = dict(named_tokens or {})
    first = [token for token in (bos_token, eos_token, pad_token) if token is not None]
    specials = list(dict.fromkeys([*first, *named.values(), *special_tokens]))
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    if add_bos:
        bos = (bos_token, backend.token_to_id(bos_token))
        backend.post_processor = processors.TemplateProcessing(
            single=f'{bos_token} $A', pair=f'{bos_token} $A {bos_token} $B', special_tokens=[bos])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        extra_special_tokens=named,
        padding_side=padding_side,
        clean_up_tokenization_spaces=False,
    )
    unnamed = [token for token in specials if token not in first and token not in named.values()]
    tokenizer.add_special_tokens({'extra_special_tokens': unnamed},
                                 replace_extra_special_tokens=False)
    return tokenizer
