"""Whether the server is there: a reachability check that runs while the backend is loaded.

Any HTTP answer to GET {base_url}/models means the server is reachable, even an error status
(a wrong key, say): what a request would then fail on is a different fault from a server that
is down. HTTP 404 there is a problem of its own: every OpenAI-compatible server serves
/v1/models, so base_url is not its API root, and every request would fail the same way. So is
a list of models without the one requests name (a typo, or a server started with
--served-model-name): requests would be refused with HTTP 400 or 404. A robot may boot before
its server, so the check never stops by itself.
"""

import asyncio
from collections.abc import Callable
from typing import Optional

import openai

from ..config import RemoteConfig
from .failures import classify, cut, redact

PROBE_TIMEOUT = 5.0  # s a reachability check may take (capped by request_timeout)
ANSWERED = 'answered a request'
SHOWN_IDS = 3  # model ids a problem names: a server may list hundreds
ID_CHARS = 100  # of each, shown: a hub repo's name has at most 96; a hostile id, any length


class Reach:
    """What the last check or request showed of the server, as /diagnostics reports it."""

    def __init__(self):
        self.reachable: Optional[bool] = None  # until the first check
        self.checked = 'not checked yet'
        self.problem = ''  # why requests will fail although the server answers
        self._answered = False  # a request was answered: a check's finding then does not matter

    def __call__(self, reachable: bool, note: str, problem: Optional[str] = None) -> None:
        """Record one check's or request's finding.

        problem None (a failed request) leaves it as it was: a request's failure does not say
        whether its cause is the server's setting.
        """
        self.reachable, self.checked = reachable, note
        self._answered = self._answered or note == ANSWERED
        if problem is not None:
            self.problem = '' if self._answered else problem

    def status(self) -> dict:
        """Return the backend_* values of /diagnostics."""
        return {'backend_reachable': 'unknown' if self.reachable is None else self.reachable,
                'backend_checked': self.checked, 'backend_problem': self.problem}


def same_model(listed: str, name: str) -> bool:
    """Tell whether a listed model id is the name requests carry, as a server would match it.

    vLLM and SGLang match names exactly. Ollama lists 'llava:latest' for what a request may
    call 'llava' (the tag defaults to latest, the namespace to library/) and ignores case. A
    false alarm would send someone hunting a fault that is not there, so a name matches in
    any of these forms, and a trailing '/' of a local directory does not count either.
    """
    return _canonical(listed) == _canonical(name)


def _canonical(name: str) -> str:
    name = name.strip().rstrip('/').casefold()
    name = name.removeprefix('registry.ollama.ai/').removeprefix('library/')
    return name if ':' in name.rsplit('/', 1)[-1] else f'{name}:latest'


def unlisted_model(data, model: str, remote_model: str, base_url: str, key: str) -> str:
    """Say why requests will fail when GET /models lists models but not this one, else ''.

    ``data`` is the list the server answered (any JSON: the server may be hostile), ``model``
    the name requests carry, ``remote_model`` the parameter ('' when the model parameter gave
    the name). An empty list, or one without ids, says nothing: some servers list no models
    and answer any name. A few ids are named, each redacted and cut short, as repr() quotes
    them, so a server cannot fill /diagnostics or write control characters into it.
    """
    items = data if isinstance(data, list) else []
    ids = [item for item in (getattr(entry, 'id', None) for entry in items)
           if isinstance(item, str)]
    if not ids or any(same_model(listed, model) for listed in ids):
        return ''
    shown = ', '.join(repr(cut(redact(listed, key), ID_CHARS)) for listed in ids[:SHOWN_IDS])
    if len(ids) > SHOWN_IDS:
        shown += f' and {len(ids) - SHOWN_IDS} more'
    if remote_model:
        return f'{base_url} serves {shown} (GET /models), not remote_model {model!r}'
    return (f'{base_url} serves {shown} (GET /models), not model {model!r} (remote_model is '
            'empty: set it to the served name)')


async def check_forever(client: openai.AsyncOpenAI, remote: RemoteConfig, key: str,
                        reach: Callable[[bool, str, str], None], model: str) -> None:
    """Ask GET {base_url}/models every probe_period s; tell reach what came back.

    reach(reachable, note, problem): problem is why requests will fail though the server
    answers ('' when none is known). ``model`` is the name requests carry.
    """
    client = client.with_options(timeout=min(PROBE_TIMEOUT, remote.request_timeout))
    while True:
        try:
            page = await client.models.list()
            reach(True, 'GET /models answered', unlisted_model(
                getattr(page, 'data', None), model, remote.model, remote.base_url, key))
        except openai.APIConnectionError as exc:
            reach(False, classify(exc, False, key, remote.request_timeout)[1], '')
        except openai.NotFoundError:
            reach(True, 'GET /models answered HTTP 404', f'GET {remote.base_url}/models '
                  'answered HTTP 404: base_url must be the API root, up to and including /v1')
        except Exception as exc:  # noqa: BLE001 - any other answer: the server is there
            cause = classify(exc, False, key, remote.request_timeout)[1]
            reach(True, f'GET /models answered, but {cause}', '')
        await asyncio.sleep(remote.probe_period)
