"""Shard sets: a shard of another layout, or a set that is not what preprocess wrote, is refused by name."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from trained import FAST, edited_shard, plan_of

from rootml.exceptions import LayoutError
from rootml.training import train

pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]


def test_shards_of_another_layout_rejected(data, tmp_path):
    layout, shards, _ = data
    other = dict(layout, digest="f" * 64)
    with pytest.raises(LayoutError, match=r"built for another layout(.|\n)*in file .*shard-"):
        train(other, shards, tmp_path / "b", options=FAST)
    assert not (tmp_path / "b").exists()


def test_training_refuses_a_shard_set_that_is_not_what_preprocess_wrote(data, tmp_path):
    """A missing shard (a failed preprocess), a flipped byte, a lost record, labels out of
    range: each an error naming the file or chunk and the step to re-run, and no bundle."""
    layout, shards, _ = data
    out = tmp_path / "b"
    with pytest.raises(LayoutError, match=r"chunk \d+ \(.*entries .*\) of the plan has no shard"):
        train(layout, shards[1:], out, options=FAST)
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    copies = [flipped / p.name for p in shards]
    for p, q in zip(shards, copies, strict=True):
        shutil.copy(p, q)
        shutil.copy(p.with_suffix(".json"), q.with_suffix(".json"))
    raw = bytearray(copies[0].read_bytes())
    raw[len(raw) // 2] ^= 0x40
    copies[0].write_bytes(bytes(raw))
    with pytest.raises(LayoutError, match="is not the file preprocess wrote") as err:
        train(layout, copies, out, options=FAST)
    assert str(copies[0]) in str(err.value)
    assert "re-run the preprocess step" in str(err.value)
    copies[0].with_suffix(".json").unlink()
    with pytest.raises(LayoutError, match="has no record"):
        train(layout, copies, out, options=FAST)

    def label_five(h5):
        h5["y"][...] = 5

    relabelled = tmp_path / "relabelled"
    relabelled.mkdir()
    bad = [edited_shard(shards[0], relabelled, label_five)]
    with pytest.raises(LayoutError, match=r"labels outside 0-1 \(e.g. 5\)") as err:
        train(plan_of(layout, bad), bad, out, options=FAST)
    assert str(bad[0]) in str(err.value)
    assert not out.exists()
