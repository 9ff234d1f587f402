"""The reacting tabletop (demo/world.py) and the scripted head's recording of it."""

import numpy as np
import pytest
from builtin_interfaces.msg import Time as Stamp
from vlm_ros.bag.storage import open_bag
from vlm_ros.demo import world_recording
from vlm_ros.demo.head_trial import random_chooser, run_episodes
from vlm_ros.demo.world import BIN, COMMANDS, TABLE, TASKS, World, episodes, expert
from vlm_ros.demo.world_node import decided_since
from vlm_ros.demo.world_recording import FRAME_NS, STEP_TYPE, TOPICS, write_world_recording


def test_the_scripted_head_fulfils_every_starting_state_within_four_commands():
    played = episodes(60, seed=0)
    assert {task for task, _ in played} == set(TASKS)
    assert any(world.places != World().places for _, world in played)  # some start moved
    trial = run_episodes('scripted', expert, played, max_decisions=4)
    assert trial.successes == trial.episodes == len(played)
    assert set(trial.decisions) == {2, 4}  # a covered block is moved off first


def test_a_command_the_world_cannot_carry_out_changes_nothing():
    world = World()
    assert not world.apply('place', BIN)  # nothing held
    assert world.apply('pick', 'green block') and world.held == 'green'
    assert not world.apply('pick', 'red block')  # already holding
    assert world.apply('place', 'blue block') and world.places['green'] == 'blue'
    assert not world.apply('pick', 'blue block')  # covered by green
    before = (dict(world.places), world.held)
    assert not world.apply('place', 'nowhere') and not world.apply('wave', 'red block')
    assert (world.places, world.held) == before


def test_what_is_held_and_where_blocks_are_is_in_the_frame():
    world = World()
    empty = world.draw(320, 240)
    world.apply('pick', 'red block')
    holding = world.draw(320, 240)
    world.apply('place', TABLE)
    assert np.array_equal(world.draw(320, 240), empty)  # back on its own spot
    assert not np.array_equal(holding, empty)
    world.apply('pick', 'red block')
    world.apply('place', BIN)
    assert not np.array_equal(world.draw(320, 240), empty)


def test_episodes_and_the_random_head_repeat_with_their_seed():
    assert repr(episodes(12, 3)) == repr(episodes(12, 3)) != repr(episodes(12, 4))
    first = run_episodes('random', random_chooser(5), episodes(12, 3), 6)
    assert first == run_episodes('random', random_chooser(5), episodes(12, 3), 6)
    assert len(COMMANDS) == len(set(COMMANDS)) == 8


def test_the_recording_has_each_decisions_frames_then_its_command(tmp_path):
    played = episodes(6, seed=2)
    expected = []
    for task, start in played:
        world = start.copy()
        while not world.done(task):
            expected.append((task.text, *expert(world, task)))
            world.apply(*expert(world, task))
    counts = write_world_recording(tmp_path / 'rec', played, frames_per_decision=3)
    assert counts == {'episodes': 6, 'decisions': len(expected), 'frames': 3 * len(expected)}
    with open_bag(tmp_path / 'rec') as reader:
        log = [(c.topic, t, reader.deserialize(raw, c.msgtype)) for c, t, raw in
               reader.messages()]
        assert STEP_TYPE in {c.msgtype for c in reader.connections}
    steps = [(msg.instruction, msg.skill, msg.target) for topic, _, msg in log
             if topic == TOPICS['step']]
    assert steps == expected
    for index, (topic, when, _) in enumerate(log):
        if topic == TOPICS['image']:  # the next message after a decision's frames: its step
            later = next(entry for entry in log[index + 1:] if entry[0] != TOPICS['image'])
            assert later[0] == TOPICS['step'] and later[1] - when <= 3 * FRAME_NS


def test_the_command_line_records_the_episodes_of_its_seed(tmp_path, capsys):
    assert world_recording.main([str(tmp_path / 'cli'), '--episodes', '4', '--seed', '2']) == 0
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'cli'}: 4 episodes, ")
    write_world_recording(tmp_path / 'two', episodes(4, seed=2))
    write_world_recording(tmp_path / 'zero', episodes(4, seed=0))  # --seed's default
    recorded = {name: recording(tmp_path / name) for name in ('cli', 'two', 'zero')}
    assert recorded['cli'] == recorded['two'] != recorded['zero']


def recording(path) -> list:
    """Return a recording's messages as (topic, log time, serialized bytes)."""
    with open_bag(path) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]


@pytest.mark.parametrize('count', [0, 1])
def test_few_episodes_give_a_small_recording(tmp_path, count):
    counts = write_world_recording(tmp_path / 'rec', episodes(count, seed=0))
    assert counts['episodes'] == count


def test_a_command_decided_before_the_state_or_stamped_before_1970_is_not_taken():
    """world_node takes commands from anyone on the DDS domain: a negative stamp ends nothing."""
    since = 5 * 10**9  # the state's first frame
    assert decided_since(Stamp(sec=5, nanosec=0), since)
    assert not decided_since(Stamp(sec=4, nanosec=999_999_999), since)
    assert not decided_since(Stamp(sec=-2**31, nanosec=0), since)
