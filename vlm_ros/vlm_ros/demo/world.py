"""A tabletop that reacts to commands: the closed loop an action head is tried in (issue 28).

The sample recording plays a script; here the gripper does what it is told. The world holds
where each block is (its own spot on the table, the bin, or on another block) and what the
gripper holds, and takes one command at a time, a StepCommand's skill and target: ``pick`` a
block, or ``place`` the held one in the bin, on the table or on a block. A command the world
cannot carry out (pick while holding, place with nothing held, a covered block) changes
nothing and is still a decision spent. Each state is drawn with the sample's own scene
(tabletop.py): the gripper home, or at carrying height with its block. ``expert`` is the
scripted head, which knows the state; a learned head only sees the frames and the instruction.
"""

import random
from dataclasses import dataclass, field

from .tabletop import BIN_FLOOR, BIN_SLOTS, BLOCK, CARRY_Y, CLOSED, HOME, START, draw_scene

BLOCKS = ('red', 'green', 'blue')
# The camera a head sees the world through: the recording, the trial and the node alike.
SIZE, FRAME_ID = (320, 240), 'camera_optical_frame'
BIN, TABLE = 'bin', 'table'
# Every command a head may give: (skill, target), in the order of a head's vocabulary.
COMMANDS = tuple([('pick', f'{block} block') for block in BLOCKS] +
                 [('place', where) for where in (BIN, TABLE)] +
                 [('place', f'{block} block') for block in BLOCKS])


@dataclass(frozen=True)
class Task:
    """An instruction and the block places that fulfil it (nothing held)."""

    text: str
    goal: tuple  # (block, place) pairs


TASKS = tuple([Task(f'put the {block} block in the bin', ((block, BIN),)) for block in BLOCKS] +
              [Task(f'stack the {top} block on the {below} block', ((top, below),))
               for top, below in (('green', 'blue'), ('red', 'green'), ('blue', 'red'))])


@dataclass
class World:
    """Where each block is (TABLE, BIN or a block's name) and which block is held (or None)."""

    places: dict = field(default_factory=lambda: dict.fromkeys(BLOCKS, TABLE))
    held: str = None

    def copy(self) -> 'World':
        """Return a world in the same state: every head plays an episode from its own."""
        return World(dict(self.places), self.held)

    def covered(self, block: str) -> bool:
        """Tell whether another block sits on block."""
        return block in self.places.values()

    def apply(self, skill: str, target: str) -> bool:
        """Carry out one command; return whether it could be (False: nothing changed)."""
        block = target[:-len(' block')] if target.endswith(' block') else target
        if skill == 'pick' and self.held is None and block in self.places and \
                not self.covered(block):
            self.held = block
            del self.places[block]
            return True
        if skill == 'place' and self.held is not None and (
                block in (BIN, TABLE) or block in self.places and not self.covered(block)
                and self.places[block] == TABLE):
            self.places[self.held], self.held = block, None
            return True
        return False

    def done(self, task: Task) -> bool:
        """Tell whether the task is fulfilled: its blocks in place and the gripper empty."""
        return self.held is None and all(self.places.get(b) == p for b, p in task.goal)

    def draw(self, width: int = 640, height: int = 480):
        """Draw the state as an RGB frame of the sample's scene."""
        pose = (HOME[0], CARRY_Y, CLOSED) if self.held else HOME
        return draw_scene(pose, {block: self._spot(block) for block in self.places}, self.held,
                          width, height)

    def _spot(self, block: str) -> tuple:
        where = self.places[block]
        if where == TABLE:
            return START[block]
        if where == BIN:
            return BIN_SLOTS[BLOCKS.index(block)], BIN_FLOOR
        x, bottom = self._spot(where)
        return x, bottom - BLOCK


def expert(world: World, task: Task) -> tuple:
    """Return the scripted head's next (skill, target): it sees the state, not the frame."""
    block, place = task.goal[0]
    if world.held is not None:
        return 'place', (place if place in (BIN, TABLE) else f'{place} block') \
            if world.held == block else TABLE
    under = {block} | ({place} if place in BLOCKS else set())  # what must be uncovered
    blocking = [b for b, p in world.places.items() if p in under]
    return 'pick', f'{(blocking or [block])[0]} block'


def episodes(count: int, seed: int) -> list:
    """Return count (task, starting World) pairs: each task in turn, some blocks already moved.

    A start may have another block in the bin or stacked on one the task needs, so that the
    head must look: the same instruction asks for other commands from other states.
    """
    rng = random.Random(seed)
    made = []
    for index in range(count):
        task = TASKS[index % len(TASKS)]
        world = World()
        moved = rng.choice([None, *BLOCKS])
        if moved is not None and moved not in {name for pair in task.goal for name in pair}:
            world.places[moved] = rng.choice([BIN, *[b for b in BLOCKS if b != moved]])
            if world.places[moved] != BIN and world.covered(moved):
                world.places[moved] = BIN
        if not world.done(task):
            made.append((task, world))
    return made
