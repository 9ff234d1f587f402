"""One request as a streamed chat completion, built exactly as an in-process model would see it.

The same resize (then JPEG, as a data URL), the same prompt templates and the same chat layout
as the 'transformers' backend, so the two backends answer the same question. Two asks a server
may ignore (transformers serve does, with a warning): ``logprobs``, for the answer's
confidence, and for plans (constrain_plans not 'off') the plan schema as ``response_format``,
the structured output of vLLM, SGLang, llama.cpp and OpenAI; RemoteEngine checks the answer.
"""

import base64

from ..chat import user_message
from ..config import EngineConfig
from ..plan_schema import PLAN_TASKS, plan_schema
from ..preprocess import encode_jpeg
from ..prompts import render_task


def chat_payload(request, config: EngineConfig, templates: dict, model: str) -> dict:
    """Build the chat completion: same resize, template and chat layout as in-process."""
    parts = [(name, _image_part(image, config)) for name, image in request.views()]
    prompt = render_task(templates, request.task, request.text, request.context)
    messages = user_message(prompt, parts[0][1]) if len(parts) == 1 else \
        user_message(prompt, cameras=parts)  # several cameras: each after its name
    sampling = {'temperature': config.temperature, 'top_p': config.top_p} \
        if config.do_sample else {'temperature': 0.0}  # 0: greedy on every server
    # include_usage: vLLM and SGLang report token counts in a stream only when asked.
    payload = {'model': model, 'messages': messages,
               'max_tokens': request.max_new_tokens or config.max_new_tokens,
               'stream': True, 'stream_options': {'include_usage': True}, 'logprobs': True,
               **sampling}
    if schema_asked(request, config):
        payload['response_format'] = {'type': 'json_schema', 'json_schema': {
            'name': 'plan', 'strict': True,
            'schema': plan_schema(tuple(config.skills), request.camera_names())}}
    return payload


def _image_part(image, config: EngineConfig) -> dict:
    """Return an image as a chat content part: resized as in-process, then a JPEG data URL."""
    jpeg = encode_jpeg(image, config.max_image_side, config.remote.jpeg_quality)
    return {'type': 'image_url', 'image_url': {
        'url': 'data:image/jpeg;base64,' + base64.b64encode(jpeg).decode('ascii')}}


def schema_asked(request, config: EngineConfig) -> bool:
    """Tell whether request's answer is asked to follow the plan schema (a plan, not 'off')."""
    return request.task in PLAN_TASKS and config.constrain_plans != 'off'
