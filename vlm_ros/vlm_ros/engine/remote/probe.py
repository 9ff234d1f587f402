"""Whether the server is there: a reachability check that runs while the backend is loaded.

Any HTTP answer to GET {base_url}/models means the server is reachable, even an error status
(a wrong key, say): what a request would then fail on is a different fault from a server that
is down. A robot may boot before its server, so the check never stops by itself.
"""

import asyncio
from collections.abc import Callable

import openai

from ..config import RemoteConfig
from .failures import classify

PROBE_TIMEOUT = 5.0  # s a reachability check may take (capped by request_timeout)


async def check_forever(client: openai.AsyncOpenAI, remote: RemoteConfig, key: str,
                        reach: Callable[[bool, str], None]) -> None:
    """Ask GET {base_url}/models every probe_period s and tell reach what came back."""
    client = client.with_options(timeout=min(PROBE_TIMEOUT, remote.request_timeout))
    while True:
        try:
            await client.models.list()
            reach(True, 'GET /models answered')
        except openai.APIConnectionError as exc:
            reach(False, classify(exc, False, key, remote.request_timeout)[1])
        except Exception as exc:  # noqa: BLE001 - any other answer: the server is there
            cause = classify(exc, False, key, remote.request_timeout)[1]
            reach(True, f'GET /models answered, but {cause}')
        await asyncio.sleep(remote.probe_period)
