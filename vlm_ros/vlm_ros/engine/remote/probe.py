"""Whether the server is there: a reachability check that runs while the backend is loaded.

Any HTTP answer to GET {base_url}/models means the server is reachable, even an error status
(a wrong key, say): what a request would then fail on is a different fault from a server that
is down. HTTP 404 there is a problem of its own: every OpenAI-compatible server serves
/v1/models, so base_url is not its API root, and every request would fail the same way. A
robot may boot before its server, so the check never stops by itself.
"""

import asyncio
from collections.abc import Callable
from typing import Optional

import openai

from ..config import RemoteConfig
from .failures import classify

PROBE_TIMEOUT = 5.0  # s a reachability check may take (capped by request_timeout)
ANSWERED = 'answered a request'


class Reach:
    """What the last check or request showed of the server, as /diagnostics reports it."""

    def __init__(self):
        self.reachable: Optional[bool] = None  # until the first check
        self.checked = 'not checked yet'
        self.problem = ''  # why requests will fail although the server answers
        self._answered = False  # a request was answered: a check's 404 then does not matter

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


async def check_forever(client: openai.AsyncOpenAI, remote: RemoteConfig, key: str,
                        reach: Callable[[bool, str, str], None]) -> None:
    """Ask GET {base_url}/models every probe_period s; tell reach what came back.

    reach(reachable, note, problem): problem is why requests will fail though the server
    answers ('' when none is known).
    """
    client = client.with_options(timeout=min(PROBE_TIMEOUT, remote.request_timeout))
    while True:
        try:
            await client.models.list()
            reach(True, 'GET /models answered', '')
        except openai.APIConnectionError as exc:
            reach(False, classify(exc, False, key, remote.request_timeout)[1], '')
        except openai.NotFoundError:
            reach(True, 'GET /models answered HTTP 404', f'GET {remote.base_url}/models '
                  'answered HTTP 404: base_url must be the API root, up to and including /v1')
        except Exception as exc:  # noqa: BLE001 - any other answer: the server is there
            cause = classify(exc, False, key, remote.request_timeout)[1]
            reach(True, f'GET /models answered, but {cause}', '')
        await asyncio.sleep(remote.probe_period)
