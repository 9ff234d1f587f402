"""The package exception: every failure a user can act on, with the reason spelled out."""

from typing import Optional


class VlmError(Exception):
    """A failure of loading or running a VLM, naming the model, the device and the cause.

    ``kind`` lets callers map failures to statuses without parsing messages: 'not_found',
    'unsupported', 'out_of_memory', 'load_failed', 'bad_input', 'generation_failed', and for
    a remote server 'backend_unreachable', 'backend_timeout', 'backend_http_error',
    'backend_bad_response'.
    """

    def __init__(self, kind: str, message: str, model: str = '', device: str = '',
                 cause: Optional[BaseException] = None):
        where = ', '.join(part for part in (f'model {model!r}' if model else '',
                                            f'device {device!r}' if device else '') if part)
        super().__init__(f'{message} ({where})' if where else message)
        self.kind = kind
        self.model = model
        self.device = device
        self.__cause__ = cause

    @property
    def exit_code(self) -> int:
        """The tools' exit status: 2 for what the user gave (a path, a file, a value), else 1."""
        return 2 if self.kind in ('bad_input', 'not_found', 'unsupported') else 1
