"""Tests of feddmr_jax.checkpoint: round trip, retention, integrity, stop flag, run dirs."""

import gc
import glob
import os
import signal
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax import checkpoint as checkpoint_lib
from feddmr_jax.checkpoint import Checkpointer, install_stop_handler, run_dir_state
from feddmr_jax.errors import ConfigError, FeddmrError

# After a failed read orbax abandons its other pending read coroutines; the garbage
# collector reports them ("unraisable", "never awaited"): expected noise here.
pytestmark = [
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning"),
]


class State(NamedTuple):
    params: jax.Array
    round: jax.Array
    key: jax.Array
    extra: dict


@flax.struct.dataclass
class Small:
    w: jax.Array
    n: int = flax.struct.field(pytree_node=False, default=2)


def make_state(seed: int) -> State:
    key = jax.random.key(seed)
    params = jax.random.normal(key, (32, 32), jnp.float32)  # 4 KiB: stored out of line
    params = params.at[0, 0].set(-0.0).at[0, 1].set(jnp.nan)  # bitwise, not just ==
    return State(
        params=params,
        round=jnp.int32(seed),
        key=jax.random.key_data(jax.random.fold_in(key, 1)),
        extra={"counts": np.arange(5, dtype=np.int32) * seed, "lr": jnp.full((2,), 0.5, jnp.bfloat16)},
    )


@pytest.fixture
def reads_corrupt_data():
    """Collects orbax's abandoned read coroutines inside the test that caused them."""
    yield
    gc.collect()


def assert_bitwise_equal(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert type(g) is type(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.asarray(g).tobytes() == np.asarray(w).tobytes()


def save_steps(directory, steps, **kwargs):
    with Checkpointer(directory, **kwargs) as ckpt:
        return [ckpt.save(s, make_state(s), {"round": s}) for s in steps]


def test_round_trip_is_bitwise_in_a_fresh_checkpointer(tmp_path):
    state = make_state(3)
    with Checkpointer(tmp_path / "ck") as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(3, state, {"round": 3, "seed": 0})
    with Checkpointer(tmp_path / "ck") as ckpt:
        assert ckpt.latest_step() == 3
        step, restored, meta = ckpt.restore(make_state(0))
    assert step == 3 and meta == {"round": 3, "seed": 0}
    assert isinstance(restored, State)
    assert_bitwise_equal(restored, state)


def test_restore_into_abstract_template_and_flax_dataclass(tmp_path):
    state = Small(w=jnp.arange(6, dtype=jnp.float32).reshape(2, 3))
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(0, state, {})
        _, restored, _ = ckpt.restore(jax.eval_shape(lambda: state))
    assert isinstance(restored, Small) and restored.n == 2
    assert isinstance(restored.w, jax.Array)
    assert_bitwise_equal(restored, state)


def test_keep_retains_only_last_n(tmp_path):
    save_steps(tmp_path, range(5), keep=2)
    with Checkpointer(tmp_path, keep=2) as ckpt:
        assert ckpt.all_steps() == [3, 4]
    assert sorted(os.listdir(tmp_path)) == ["3", "4"]


def test_every_and_force(tmp_path):
    with Checkpointer(tmp_path, every=3, keep=10) as ckpt:
        saved = [ckpt.save(s, make_state(s), {}) for s in range(8)]
        assert saved == [True, False, False, True, False, False, True, False]
        assert ckpt.save(7, make_state(7), {}, force=True)
        assert not ckpt.save(7, make_state(7), {}, force=True)  # already the newest step
        assert ckpt.all_steps() == [0, 3, 6, 7]
        with pytest.raises(FeddmrError, match="already holds step 7"):
            ckpt.save(5, make_state(5), {}, force=True)


def _data_files(step_dir) -> list[str]:
    """The state's chunk files: ``state/<leaf>/<chunk index>`` (one zarr array per leaf)."""
    paths = glob.glob(f"{step_dir}/state/*/[0-9]*")
    assert paths, f"no chunk files under {step_dir}/state"
    return paths


def _truncate_data_files(step_dir):
    for path in _data_files(step_dir):
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)


def _delete_data_files(step_dir):
    for path in _data_files(step_dir):
        os.remove(path)


def _flip_a_byte(step_dir):  # the chunk may still decode: the checksum catches it then
    path = max(_data_files(step_dir), key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))


def _delete_commit_file(step_dir):
    os.remove(os.path.join(step_dir, "commit_success.txt"))


def _delete_meta(step_dir):
    os.remove(os.path.join(step_dir, "meta", "metadata"))


CORRUPTIONS = [_truncate_data_files, _delete_data_files, _flip_a_byte, _delete_commit_file, _delete_meta]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.usefixtures("reads_corrupt_data")
def test_corrupted_latest_falls_back_with_warning(tmp_path, corrupt):
    save_steps(tmp_path, [1, 2])
    corrupt(tmp_path / "2")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.warns(RuntimeWarning, match=r"step 2 .* is invalid .*restoring step 1"):
            step, restored, meta = ckpt.restore(make_state(0))
        assert (step, meta) == (1, {"round": 1})
        assert_bitwise_equal(restored, make_state(1))
        assert (tmp_path / "2.corrupt").is_dir() and ckpt.all_steps() == [1]
        assert ckpt.save(2, make_state(2), {"round": 2})  # training resumes and saves again
        assert ckpt.restore(make_state(0))[0] == 2


@pytest.mark.usefixtures("reads_corrupt_data")
def test_all_corrupted_raises_and_moves_nothing(tmp_path):
    save_steps(tmp_path, [1, 2])
    _truncate_data_files(tmp_path / "1")
    _flip_a_byte(tmp_path / "2")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(FeddmrError, match=r"no valid checkpoint.*step 2: SHA-256.*step 1"):
            ckpt.restore(make_state(0))
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


@pytest.mark.usefixtures("reads_corrupt_data")
def test_explicit_bad_step_raises_without_fallback(tmp_path):
    save_steps(tmp_path, [1, 2])
    _flip_a_byte(tmp_path / "1")
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(FeddmrError, match="step 1: SHA-256"):
            ckpt.restore(make_state(0), step=1)
        with pytest.raises(FeddmrError, match="no checkpoint for step 7"):
            ckpt.restore(make_state(0), step=7)


def test_empty_dir_raises(tmp_path):
    with Checkpointer(tmp_path) as ckpt, pytest.raises(FeddmrError, match="no checkpoint in"):
        ckpt.restore(make_state(0))


def test_template_mismatch_is_a_config_error_not_corruption(tmp_path):
    save_steps(tmp_path, [1, 2])
    template = make_state(0)._replace(params=jnp.zeros((5, 32), jnp.float32))
    with Checkpointer(tmp_path) as ckpt, pytest.raises(ConfigError, match=r"\.params.*float32\[32, 32\]"):
        ckpt.restore(template)
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_checkpoint_of_an_older_format_is_refused_in_one_line(tmp_path, monkeypatch):
    """A step written before the Flax port (format 1) is refused, not misread or set aside."""
    monkeypatch.setattr(checkpoint_lib, "_FORMAT", 1)
    save_steps(tmp_path, [1])
    monkeypatch.undo()
    with Checkpointer(tmp_path) as ckpt, pytest.raises(ConfigError) as err:
        ckpt.restore(make_state(0))                   # same structure: only the format differs
    message = str(err.value)
    assert "\n" not in message
    assert "has format 1" in message and "start a new run folder" in message
    assert sorted(os.listdir(tmp_path)) == ["1"]


def test_steps_saved_with_ocdbt_restore_and_later_steps_save_beside_them(tmp_path, monkeypatch):
    """Runs checkpointed before the chunked layout (orbax's OCDBT store) resume as before."""
    monkeypatch.setattr(checkpoint_lib, "_USE_OCDBT", True)
    save_steps(tmp_path, [1])
    assert glob.glob(f"{tmp_path}/1/state/ocdbt.process_0/d/*")
    monkeypatch.undo()
    save_steps(tmp_path, [2])
    assert not glob.glob(f"{tmp_path}/2/state/ocdbt.process_0")
    with Checkpointer(tmp_path) as ckpt:
        for step in (1, 2):
            got, restored, meta = ckpt.restore(make_state(0), step=step)
            assert (got, meta) == (step, {"round": step})
            assert_bitwise_equal(restored, make_state(step))


def test_typed_prng_key_is_rejected(tmp_path):
    with Checkpointer(tmp_path) as ckpt, pytest.raises(TypeError, match="key_data"):
        ckpt.save(0, {"key": jax.random.key(0)}, {})


def test_sigterm_sets_stop_flag_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)
    with install_stop_handler() as flag:
        assert not flag.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested and flag.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_second_sigint_raises_keyboard_interrupt():
    before = signal.getsignal(signal.SIGINT)
    flag = install_stop_handler()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        flag.restore_handlers()


def test_run_dir_state(tmp_path):
    assert run_dir_state(tmp_path / "missing") == "empty"
    assert run_dir_state(tmp_path) == "empty"
    (tmp_path / "notes.txt").write_text("unrelated")
    assert run_dir_state(tmp_path) == "empty"
    for name in ("metrics.jsonl", "summary.json", "checkpoints"):
        run = tmp_path / name.split(".")[0]
        run.mkdir()
        (run / name).mkdir() if name == "checkpoints" else (run / name).write_text("{}")
        assert run_dir_state(run) == "has_run"
    with pytest.raises(FeddmrError, match="not a folder"):
        run_dir_state(tmp_path / "notes.txt")


def test_unfinished_save_is_ignored_and_cleaned_up(tmp_path):
    leftover = tmp_path / "5.orbax-checkpoint-tmp-1700000000000"  # a save cut short
    leftover.mkdir()
    (leftover / "junk").write_text("x")
    save_steps(tmp_path, [1])
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.latest_step() == 1
    assert not leftover.exists()
