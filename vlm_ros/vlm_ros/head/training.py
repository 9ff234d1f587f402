"""Fitting the reference head to a vlm_export dataset, within a bound on time.

Each pair's target is the chunk of actions from its own onwards, within its instruction (past
the instruction's last pair, the last action again). Every fifth pair is held out for
validation; the report gives both losses beside the baseline a head that learnt nothing would
reach (the mean action, or the most common skill), so a user sees whether the features carried
what the actions depend on.
"""

import contextlib
import json
import pathlib
import pickle
import time
import zipfile
import zlib

import numpy as np
import torch

from ..engine import VlmError
from .policy import SKILLS, SOURCE, VALUES, ActionNet, Head

STEP_TYPE = 'vlm_ros_msgs/msg/StepCommand'


def load_dataset(folder) -> tuple:
    """Return (arrays, manifest) of a vlm_export folder; VlmError naming what is wrong."""
    folder = pathlib.Path(folder)
    missing = [name for name in ('dataset.npz', 'manifest.json') if not (folder / name).is_file()]
    if missing:
        raise VlmError('bad_input', f'{folder} is not a dataset of vlm_export: no '
                       f'{" or ".join(missing)}')
    try:
        manifest = json.loads((folder / 'manifest.json').read_text(encoding='utf-8'))
        source = {key: manifest[key] for key in SOURCE}
        action_type = manifest['actions']['type']
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VlmError('bad_input', f'{folder}: cannot read the dataset ({exc})') from None
    try:
        with np.load(folder / 'dataset.npz') as stored:
            arrays = {key: stored[key] for key in ('features', 'actions', 'instruction')}
    # An empty or truncated file (a copy cut short, a full disk): EOFError, BadZipFile, ...
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile,
            zlib.error) as exc:
        raise VlmError('bad_input', f'{folder} is not a dataset of vlm_export: its dataset.npz '
                       f'cannot be read ({type(exc).__name__}: {str(exc)[:200]})') from None
    features, actions, instruction = (arrays[k] for k in ('features', 'actions', 'instruction'))
    rows = len(features) if features.ndim else 0
    if rows == 0 or features.ndim != 2 or actions.shape[:1] != (rows,) or actions.ndim != 2 \
            or instruction.shape != (rows,):
        raise VlmError('bad_input', f'{folder}: no pairs of one features vector, one action and '
                       f'one instruction each (features {features.shape}, actions '
                       f'{actions.shape}, instruction {instruction.shape})')
    if not all(np.issubdtype(array.dtype, np.number) for array in arrays.values()):
        raise VlmError('bad_input', f'{folder}: features, actions or instruction that are not '
                       'numbers')
    if not np.isfinite(features).all() or not np.isfinite(actions).all():
        raise VlmError('bad_input', f'{folder}: features or actions that are not finite')
    return arrays, {**manifest, 'source': source, 'action_type': action_type}


def chunk_targets(actions: np.ndarray, instruction: np.ndarray, chunk: int) -> np.ndarray:
    """Return (pairs x chunk x columns): each pair's action and those after it, per instruction.

    The pairs are in log order, so an instruction's pairs are consecutive; past its last one,
    the chunk repeats that last action.
    """
    rows = np.arange(len(actions))
    ahead = np.minimum(rows[:, None] + np.arange(chunk)[None, :], len(actions) - 1)
    same = instruction[ahead] == instruction[:, None]
    for step in range(1, chunk):
        ahead[:, step] = np.where(same[:, step], ahead[:, step], ahead[:, step - 1])
    return actions[ahead]


def train(folder, hidden: int = 256, chunk: int = 1, seconds: float = 60.0,
          epochs: int = 2000, seed: int = 0) -> tuple:
    """Fit a head to the dataset in folder; return (Head, report)."""
    arrays, manifest = load_dataset(folder)
    torch.manual_seed(seed)
    features = torch.as_tensor(arrays['features'], dtype=torch.float32)
    targets = chunk_targets(arrays['actions'], arrays['instruction'], chunk)
    kind = SKILLS if manifest['action_type'] == STEP_TYPE else VALUES
    skills = list(manifest['actions'].get('skills') or [])
    if kind == SKILLS:
        target = torch.as_tensor(targets[..., 0], dtype=torch.long)
        outputs, mean, scale = len(skills), None, None
    else:
        mean = arrays['actions'].mean(axis=0).astype(np.float32)
        scale = arrays['actions'].std(axis=0).astype(np.float32)
        scale[scale == 0] = 1.0
        target = torch.as_tensor((targets - mean) / scale, dtype=torch.float32)
        outputs = targets.shape[-1]
    held = np.arange(len(features)) % 5 == 4 if len(features) >= 5 else \
        np.zeros(len(features), bool)
    net = ActionNet(features.shape[1], outputs, hidden, chunk)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_of = (lambda out, want: torch.nn.functional.cross_entropy(
        out.reshape(-1, outputs), want.reshape(-1))) if kind == SKILLS else \
        torch.nn.functional.mse_loss
    fit, check = torch.as_tensor(~held), torch.as_tensor(held)
    started, done = time.monotonic(), 0
    while done < epochs and time.monotonic() - started < seconds:
        optimiser.zero_grad()
        loss_of(net(features[fit]), target[fit]).backward()
        optimiser.step()
        done += 1
    net.eval()
    with torch.no_grad():
        report = {'pairs': len(features), 'validation_pairs': int(held.sum()), 'epochs': done,
                  'seconds': round(time.monotonic() - started, 2), 'kind': kind,
                  'train_loss': float(loss_of(net(features[fit]), target[fit]))}
        if held.any():
            report['validation_loss'] = float(loss_of(net(features[check]), target[check]))
            report['baseline_loss'] = _baseline(kind, target[fit], target[check], outputs)
    head = Head(net, kind, manifest['source'], manifest['action_type'],
                list(manifest['actions'].get('columns') or []), skills, mean, scale)
    return head, report


def _baseline(kind: str, fit: torch.Tensor, check: torch.Tensor, outputs: int) -> float:
    """Return the validation loss of a head blind to features: the mean, or the usual skill."""
    if kind == SKILLS:
        counts = torch.bincount(fit.reshape(-1), minlength=outputs).float() + 1.0
        logits = counts.log().expand(check.numel(), outputs)
        return float(torch.nn.functional.cross_entropy(logits, check.reshape(-1)))
    return float(torch.nn.functional.mse_loss(fit.mean(dim=0).expand_as(check), check))


def save(head: Head, path) -> pathlib.Path:
    """Write the head to path (written beside it, then renamed: never half a file).

    Where that fails (path became a folder, a full disk), the file beside it goes too.
    """
    path = pathlib.Path(path)
    partial = path.with_name(f'.{path.name}.partial')
    try:
        try:
            torch.save(head.to_file(), partial)
        except RuntimeError as exc:  # torch's for a missing folder or a full disk
            raise OSError(f'cannot write {partial}: {exc}') from None
        partial.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise
    return path


def load(path) -> Head:
    """Read a head save wrote; VlmError where the file is not one."""
    try:
        stored = torch.load(path, map_location='cpu', weights_only=True)
        return Head.from_file(stored)
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, EOFError,
            pickle.UnpicklingError) as exc:
        raise VlmError('bad_input', f'{path} is not a head of vlm_train_head: '
                       f'{type(exc).__name__}: {str(exc)[:200]}') from None
