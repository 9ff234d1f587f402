"""The reference head's network: an MLP from one features vector to a chunk of actions.

A VLA's one-step head reads the VLM's fused representation (the prompt's last token, or its
mean) and predicts the next actions: here a normalised features vector goes through two hidden
layers to ``chunk`` actions. Continuous commands (Twist, JointState) are regressed in units of
their training set's spread; StepCommands are a choice among the skills seen in training.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

SKILLS = 'skills'  # a head that chooses a skill per action (StepCommand datasets)
# What the features were made with: a head reads only features made alike (vlm_action_head).
SOURCE = ('model', 'layer', 'pooling', 'max_image_side', 'processor_kwargs')
VALUES = 'values'  # a head that regresses each action's columns


class ActionNet(torch.nn.Module):
    """features (batch x inputs) -> (batch x chunk x outputs): action values or skill logits."""

    def __init__(self, inputs: int, outputs: int, hidden: int, chunk: int):
        super().__init__()
        self.inputs, self.outputs, self.hidden, self.chunk = inputs, outputs, hidden, chunk
        self.layers = torch.nn.Sequential(
            torch.nn.LayerNorm(inputs), torch.nn.Linear(inputs, hidden), torch.nn.GELU(),
            torch.nn.Linear(hidden, hidden), torch.nn.GELU(),
            torch.nn.Linear(hidden, outputs * chunk))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Return the chunk of actions of each features row."""
        return self.layers(features).view(-1, self.chunk, self.outputs)


@dataclass
class Head:
    """A trained head and what it needs to be used: its features' source, its actions' form.

    ``source``: the model, layer, pooling, image side and processor options the features were
    made with (SOURCE: a head reads only features made alike). ``columns``: the action's
    columns (values), ``skills`` the skill names (skills). ``mean``/``scale``: the values'
    normalisation.
    """

    net: ActionNet
    kind: str
    source: dict
    action_type: str
    columns: list
    skills: list = field(default_factory=list)
    mean: np.ndarray = None
    scale: np.ndarray = None

    def act(self, features: np.ndarray) -> list:
        """Return the chunk of actions for one features vector: value lists, or skill names.

        ValueError when the network's output is not finite: no NaN reaches a robot.
        """
        with torch.no_grad():
            out = self.net(torch.as_tensor(features, dtype=torch.float32).view(1, -1))[0]
        if not torch.isfinite(out).all():  # finite features far beyond the training set's
            raise ValueError('the head computes no finite action from these features (values '
                             f'up to {float(np.abs(features).max()):.3g})')
        if self.kind == SKILLS:
            return [self.skills[int(index)] for index in out.argmax(-1).tolist()]
        return (out.numpy() * self.scale + self.mean).tolist()

    def to_file(self) -> dict:
        """Return what torch.save stores: the weights and everything act needs."""
        return {'state': self.net.state_dict(), 'kind': self.kind, 'source': self.source,
                'action_type': self.action_type, 'columns': self.columns,
                'skills': self.skills, 'chunk': self.net.chunk, 'outputs': self.net.outputs,
                'inputs': self.net.inputs, 'hidden': self.net.hidden,
                'mean': None if self.mean is None else self.mean.tolist(),
                'scale': None if self.scale is None else self.scale.tolist()}

    @classmethod
    def from_file(cls, stored: dict) -> 'Head':
        """Rebuild a head from to_file's dict."""
        net = ActionNet(stored['inputs'], stored['outputs'], stored['hidden'], stored['chunk'])
        net.load_state_dict(stored['state'])
        net.eval()
        arrays = {key: None if stored[key] is None else np.asarray(stored[key], np.float32)
                  for key in ('mean', 'scale')}
        source = {key: stored['source'][key] for key in SOURCE}
        return cls(net, stored['kind'], source, stored['action_type'],
                   stored['columns'], stored['skills'], **arrays)
