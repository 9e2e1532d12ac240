"""A model split at a block for many passes over one fixed batch: the trunk (the blocks before the split) computed
once, the tail (the last blocks and the head) run on every pass.

When only the tail's weights change between passes (localised sampling of the last blocks, say) and the input stays
the same, the trunk's output never changes; computing it once makes each pass cost the tail alone, and a pass still
gives exactly what the whole model gives.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from iclnb.core.errors import IclnbError
from iclnb.models.hooks import StopForward

__all__ = ["MovingTail"]


class _TrunkOutput(torch.nn.Module):
    """Stand-in for a trunk block: returns the trunk's output whatever it is given. It holds no parameters; attribute
    reads it cannot answer fall through to the block it replaces (some models read e.g. ``attention_type`` off a
    block)."""

    def __init__(self, original: torch.nn.Module, output):
        super().__init__()
        self.__dict__["_original"] = original  # a plain attribute, not a submodule: its parameters stay the block's
        self.__dict__["_output"] = output

    def forward(self, *args, **kwargs):
        return self._output

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_original"], name)


class MovingTail:
    """The last ``n_blocks`` decoder blocks of ``model`` (a loaded :class:`~iclnb.models.Model`): the part whose
    weights may move while the blocks before them (the trunk, blocks ``0 .. first − 1``) stay as loaded.

    * :attr:`first`: the index of the tail's first block; :attr:`blocks`: the tail's blocks;
    * :attr:`parameter_names`: the tail's parameters as ``model.hf.named_parameters()`` names them (what
      :func:`iclnb.methods.bif.moving` takes), :attr:`n_parameters` their number of values;
    * ``with tail.frozen_trunk(input_ids, attention_mask):`` computes the trunk's output for that batch once (no
      gradients) and, until the block ends, puts a stand-in returning it in place of every trunk block: a forward
      pass of ``model.hf`` on that same batch then runs only the embeddings, the tail and the head, and gives what
      the whole model gives with the tail's current weights. The stand-ins ignore their input, so a pass on any
      other batch inside the block is wrong. The trunk's blocks are put back on exit.
    """

    def __init__(self, model, n_blocks: int):
        if not 1 <= int(n_blocks) <= model.n_layers:
            raise IclnbError(f"a moving tail of {n_blocks} blocks does not fit the {model.n_layers} blocks of "
                             f"{model.name}; use 1 to {model.n_layers}")
        self.model = model
        self.first = model.n_layers - int(n_blocks)

    @property
    def blocks(self) -> list:
        return list(self.model.blocks)[self.first:]

    @property
    def parameter_names(self) -> list[str]:
        names = {id(prm): name for name, prm in self.model.hf.named_parameters()}
        return [names[id(prm)] for block in self.blocks for prm in block.parameters() if id(prm) in names]

    @property
    def n_parameters(self) -> int:
        named = dict(self.model.hf.named_parameters())
        return int(sum(named[name].numel() for name in self.parameter_names))

    def trunk_output(self, input_ids, attention_mask):
        """The raw output of the trunk's last block (block ``first − 1``) for the batch, detached; None when the
        tail is the whole model."""
        if self.first == 0:
            return None
        captured = {}

        def keep(module, args, output):
            captured["out"] = output
            raise StopForward  # the trunk's output is all that is needed

        handle = self.model.blocks[self.first - 1].register_forward_hook(keep)
        try:
            with torch.no_grad():
                self.model.hf.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass
        finally:
            handle.remove()
        out = captured["out"]
        if isinstance(out, tuple):
            return tuple(o.detach() if torch.is_tensor(o) else o for o in out)
        return out.detach()

    @contextmanager
    def frozen_trunk(self, input_ids, attention_mask):
        """Within the block, every trunk block of the model returns the trunk's output for this batch (computed
        once, now); the blocks are put back on exit, also after an error."""
        out = self.trunk_output(input_ids, attention_mask)
        if out is None:
            yield
            return
        originals = list(self.model.blocks)[: self.first]
        try:
            for i, block in enumerate(originals):
                self.model.blocks[i] = _TrunkOutput(block, out)
            yield
        finally:
            for i, block in enumerate(originals):
                self.model.blocks[i] = block
