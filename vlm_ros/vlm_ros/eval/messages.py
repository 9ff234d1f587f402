"""A recording's messages decoded, or one error that says which message could not be.

rosbags raises AnyReaderError on bytes that are no message of their topic's type (a damaged
recording, one written with another definition of the type), and its traceback names neither
the topic nor the message. vlm_eval and vlm_export promise one line and exit 2 for a bad
recording (docs/RECORDINGS.md), so every message they decode comes through here. A recording
whose storage cannot be read on (a damaged chunk) fails in the reader itself, with the
DamagedBagError of storage.OpenBag.messages.
"""

from collections import Counter

from rosbags.highlevel import AnyReaderError

from ..bag.storage import BagError


def read_messages(reader, connections: list):
    """Yield (connection, log_ns, message) of connections' messages in log order.

    Raises BagError naming the message (its number on its topic, its log time) whose bytes do
    not decode as its topic's type.
    """
    counts = Counter()
    for connection, log_ns, raw in reader.messages(connections):
        counts[connection.topic] += 1
        try:
            msg = reader.deserialize(raw, connection.msgtype)
        except AnyReaderError as exc:
            raise BagError(f'{reader.paths[0]}: message {counts[connection.topic]} of '
                           f'{connection.topic}, logged {(log_ns - reader.start_time) / 1e9:.3f}'
                           f' s after the start, cannot be read ({exc}); the recording is '
                           f'damaged, or was written with another {connection.msgtype} '
                           'definition') from exc
        yield connection, log_ns, msg
