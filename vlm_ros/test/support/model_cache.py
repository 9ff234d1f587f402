"""Trained tiny checkpoints built once for every test process that needs them.

Training a tiny checkpoint takes seconds to a minute of CPU, and every pytest-xdist worker and
both distros' legs of ``scripts/test`` want the same ones. They are kept under
``<repo>/.cache/test-models/<key>``, where the key hashes what decides the weights (the
tiny-model code, the training samples, the torch and transformers versions), so a change to
any of them builds afresh. A file lock makes concurrent workers wait for the one that builds.
"""

import fcntl
import hashlib
import os
import pathlib
import shutil
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[3]
CACHE = pathlib.Path(os.environ.get('VLM_ROS_TEST_MODELS', ROOT / '.cache' / 'test-models'))


def _key(name: str, inputs) -> str:
    import torch
    import transformers

    from vlm_ros import models

    digest = hashlib.sha256(f'{name}\n{torch.__version__}\n{transformers.__version__}\n'.encode())
    _digest(digest, inputs)
    for source in sorted(pathlib.Path(models.__file__).parent.glob('*.py')):
        digest.update(source.read_bytes())
    return f'{name}-{digest.hexdigest()[:16]}'


def _digest(digest, value) -> None:
    """Feed value to digest whole: numpy's repr would elide the middle of an image."""
    if isinstance(value, (list, tuple)):
        digest.update(f'[{len(value)}'.encode())
        for item in value:
            _digest(digest, item)
    elif hasattr(value, 'tobytes'):
        digest.update(f'{value.dtype}{value.shape}'.encode() + value.tobytes())
    else:
        digest.update(repr(value).encode())


def cached_model(name: str, inputs, make) -> pathlib.Path:
    """Return the checkpoint make(folder) builds from inputs, building it at most once.

    make receives an empty folder and returns the checkpoint's directory inside it.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    key = _key(name, inputs)
    done = CACHE / key
    with open(CACHE / f'{key}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_dir():
            work = pathlib.Path(tempfile.mkdtemp(prefix=f'{key}.', dir=CACHE))
            try:
                built = make(work)
                (work / 'checkpoint').write_text(str(built.relative_to(work)))
                os.rename(work, done)  # complete or absent, never half-written
            except BaseException:
                shutil.rmtree(work, ignore_errors=True)
                raise
    return done / (done / 'checkpoint').read_text()
