"""vlm_train_head's inputs: widths and chunks a head can have, and a head file it can write.

Each is refused before any training (the installed tool: system/test_head.py).
"""

import numpy as np
import pytest
from head_datasets import TWIST
from vlm_ros.engine import VlmError
from vlm_ros.head import training
from vlm_ros.head.policy import VALUES, ActionNet, Head
from vlm_ros.tools.train_head import head_file, parse_args


def test_the_widest_head_and_the_longest_chunk_are_taken():
    args = parse_args(['dataset', '--hidden', '8192', '--chunk', '1024'])
    assert (args.hidden, args.chunk) == (8192, 1024)


@pytest.mark.parametrize('option, value, most', [
    ('--hidden', '8193', 8192), ('--hidden', '100000000', 8192),
    ('--chunk', '1025', 1024), ('--chunk', '1000000', 1024)])
def test_a_head_wider_or_a_chunk_longer_than_any_a_robot_needs_is_refused(capsys, option,
                                                                          value, most):
    """A width of 10**8 asked for 40 PB; a chunk of 10**6 was killed for memory."""
    with pytest.raises(SystemExit) as ended:
        parse_args(['dataset', option, value])
    assert ended.value.code == 2
    assert capsys.readouterr().err == f'vlm_train_head: error: argument {option}: must be <= ' \
        f'{most}, got {value} (see vlm_train_head --help)\n'


def test_help_says_the_largest_width_and_chunk(capsys):
    with pytest.raises(SystemExit):
        parse_args(['--help'])
    said = ' '.join(capsys.readouterr().out.split())
    assert 'hidden layer width, at most 8192' in said
    assert 'actions predicted per features vector, at most 1024' in said


@pytest.mark.parametrize('out, complaint', [
    ('.', '--out . names a folder; name the head file (as head.pt)'),
    ('{tmp}', '--out {tmp} names a folder; name the head file (as {tmp}/head.pt)'),
    ('{tmp}/new/', '--out {tmp}/new/ names a folder; name the head file (as {tmp}/new/head.pt)'),
    ('{tmp}/missing/head.pt', '--out {tmp}/missing/head.pt: {tmp}/missing is not a folder'),
    ('{tmp}/a_file/head.pt', '--out {tmp}/a_file/head.pt: {tmp}/a_file is not a folder'),
], ids=['here', 'a-folder', 'trailing-slash', 'no-parent', 'parent-is-a-file'])
def test_an_output_that_can_be_no_head_file_is_refused(tmp_path, monkeypatch, out, complaint):
    """A folder once trained for the whole --seconds, then failed; --out /tmp wrote to /."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'a_file').write_text('mine')
    with pytest.raises(VlmError) as refused:
        head_file(out.format(tmp=tmp_path))
    assert str(refused.value) == complaint.format(tmp=tmp_path)
    assert refused.value.exit_code == 2


def test_a_new_file_in_a_folder_is_taken_as_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert head_file('head.pt') == tmp_path / 'head.pt'
    (tmp_path / 'head.pt').write_text('an earlier head')
    assert head_file('head.pt') == tmp_path / 'head.pt'  # replaced


def test_a_head_that_cannot_be_written_leaves_nothing_beside_it(tmp_path):
    """The file is written beside its place, then renamed: where that fails, it goes."""
    head = Head(ActionNet(3, 6, 8, 1), VALUES, {'model': 'm', 'layer': -1, 'pooling': 'mean',
                                                'max_image_side': 640, 'processor_kwargs': {}},
                'geometry_msgs/msg/Twist', list(TWIST), mean=np.zeros(6), scale=np.ones(6))
    (tmp_path / 'taken').mkdir()
    with pytest.raises(OSError):
        training.save(head, tmp_path / 'taken')
    with pytest.raises(OSError, match='cannot write .*missing'):  # torch's RuntimeError
        training.save(head, tmp_path / 'missing' / 'head.pt')
    assert sorted(path.name for path in tmp_path.iterdir()) == ['taken']
    assert training.load(training.save(head, tmp_path / 'head.pt')).columns == list(TWIST)
