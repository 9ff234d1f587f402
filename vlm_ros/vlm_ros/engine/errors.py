"""The package exception: every failure a user can act on, with the reason spelled out."""

from typing import Optional

# Failures of what the user gave or of the model in this process (local and remote alike).
USER_KINDS = ('bad_input', 'not_found', 'unsupported')
MODEL_KINDS = ('load_failed', 'out_of_memory', 'generation_failed')
# Failures of the server the 'openai' backend asks.
BACKEND_KINDS = ('backend_unreachable', 'backend_timeout', 'backend_http_error',
                 'backend_bad_response')
KINDS = USER_KINDS + MODEL_KINDS + BACKEND_KINDS
# The kind of a call that needs a model before load() or after unload(), on every engine.
NOT_LOADED = 'load_failed'


class VlmError(Exception):
    """A failure of loading or running a VLM, naming the model, the device and the cause.

    ``kind`` lets callers map failures to statuses without parsing messages: one of KINDS
    ('not_found', 'unsupported', 'out_of_memory', 'load_failed', 'bad_input',
    'generation_failed', and for a remote server 'backend_unreachable', 'backend_timeout',
    'backend_http_error', 'backend_bad_response'). Which operation may raise which kind is
    declared in interface.CONTRACT. ``about`` is 'text' where a 'bad_input' is the request's
    text (too long for the model): a node then does not take it for a bad camera frame.
    """

    def __init__(self, kind: str, message: str, model: str = '', device: str = '',
                 cause: Optional[BaseException] = None, about: str = ''):
        where = ', '.join(part for part in (f'model {model!r}' if model else '',
                                            f'device {device!r}' if device else '') if part)
        super().__init__(f'{message} ({where})' if where else message)
        self.kind = kind
        self.model = model
        self.device = device
        self.__cause__ = cause
        self.about = about

    @property
    def exit_code(self) -> int:
        """The tools' exit status: 2 for what the user gave (a path, a file, a value), else 1."""
        return 2 if self.kind in USER_KINDS else 1
