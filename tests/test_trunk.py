"""MovingTail (iclnb.models.trunk): the tail's forward over a trunk computed once equals the whole model's, for the
tail's current weights, and the split is at the right block."""

import pytest
import torch

from iclnb.core.errors import IclnbError
from iclnb.models import MovingTail
from tests.tiny_models import tiny_model


def _batch():
    ids = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # right padding
    return ids, mask


def _logits(model, ids, mask):
    with torch.no_grad():
        return model.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits


def _nudge(block, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in block.parameters():
            prm.add_(0.2 * torch.randn(prm.shape, generator=gen, dtype=prm.dtype))


@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt2"])
@pytest.mark.parametrize("n_blocks", [1, 2, 4])
def test_the_tail_over_the_frozen_trunk_gives_the_whole_models_output(family, n_blocks):
    model, _ = tiny_model(family)
    ids, mask = _batch()
    plain = _logits(model, ids, mask)
    blocks = list(model.blocks)
    tail = MovingTail(model, n_blocks)
    assert tail.first == model.n_layers - n_blocks and tail.blocks == blocks[tail.first:]
    with tail.frozen_trunk(ids, mask):
        assert all(a is not b for a, b in zip(model.blocks[: tail.first], blocks))  # the trunk is not run
        split = _logits(model, ids, mask)
    torch.testing.assert_close(split[mask > 0], plain[mask > 0], rtol=0, atol=0)
    assert list(model.blocks) == blocks


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_the_tail_moves_and_the_trunk_does_not(family):
    """Changing the tail's first block inside the block changes the output exactly as in the whole model; changing
    the trunk's last block changes nothing (its output was computed once). A split one block off fails one of the
    two."""
    model, _ = tiny_model(family)
    ids, mask = _batch()
    plain = _logits(model, ids, mask)
    tail = MovingTail(model, 2)
    first = model.n_layers - 2  # the two last blocks move
    first_moving, last_frozen = model.blocks[first], model.blocks[first - 1]
    with tail.frozen_trunk(ids, mask):
        _nudge(last_frozen, 1)
        unchanged = _logits(model, ids, mask)
        _nudge(first_moving, 2)
        moved = _logits(model, ids, mask)
    torch.testing.assert_close(unchanged[mask > 0], plain[mask > 0], rtol=0, atol=0)
    reference, _ = tiny_model(family)  # the same weights, with only the tail's first block changed
    _nudge(reference.blocks[first], 2)
    whole = _logits(reference, ids, mask)
    assert not torch.allclose(whole[mask > 0], plain[mask > 0])
    torch.testing.assert_close(moved[mask > 0], whole[mask > 0], rtol=0, atol=0)


def test_the_tail_parameters_are_those_of_the_last_blocks():
    model, _ = tiny_model("llama")
    tail = MovingTail(model, 1)
    names = tail.parameter_names
    assert names and all(".layers.3." in n for n in names)
    assert tail.n_parameters == sum(p.numel() for p in model.blocks[3].parameters())
    assert len(MovingTail(model, 2).parameter_names) == 2 * len(names)
    for bad in (0, model.n_layers + 1):
        with pytest.raises(IclnbError, match="moving tail"):
            MovingTail(model, bad)


def test_the_blocks_are_put_back_after_an_error():
    model, _ = tiny_model("gemma3")
    ids, mask = _batch()
    blocks = list(model.blocks)
    with pytest.raises(RuntimeError, match="inside"):
        with MovingTail(model, 1).frozen_trunk(ids, mask):
            raise RuntimeError("inside")
    assert list(model.blocks) == blocks
