"""Each decoder layer's q, k, v projections as one matrix product, and its gate and up as one.

Decoding one token reads every weight of the decoder once. On an H200, SmolVLM-2B's greedy step
spent 1.33 of its 2.03 ms in the decoder's matrix-vector products, and its 2048 x 2048
projections read their weights at about 1.5 TB/s where the 8192-wide ones reached 3.2 TB/s of
the card's 4.8 (docs/BENCHMARKS.md, 2026-12-04): small products are launch- and latency-bound.
Stacking the weights that multiply the same input (q, k and v; gate and up) makes one wider
product of the same bytes.

transformers' attention calls ``q_proj``, ``k_proj`` and ``v_proj`` on one hidden state in
turn, and its MLP ``gate_proj`` and ``up_proj``. Here each stays in its place as a Linear whose
weight is a view of the stacked one (no second copy of any weight), and the first of a group
called with an input computes the whole product; the others take their columns of it for the
same input. Called with another input, a part computes again, so the results are the separate
products' whatever the calling order. The product is kept between the calls of one forward, so
two forwards must not run at once on one model: the engine runs one at a time (its worker).
The columns of one product are the same dot products as the separate products' (equal bit for
bit on the CPU, test_fused_projections_units.py); on a GPU cuda_checks compares the greedy
tokens with eager decoding's.
"""

import torch
from torch import nn

# (the layer's submodule, the projections of one input it calls in turn)
GROUPS = (('self_attn', ('q_proj', 'k_proj', 'v_proj')), ('mlp', ('gate_proj', 'up_proj')))


class _Product:
    """The stacked weight of one group, and its last product until every part has taken it."""

    def __init__(self, linears: list):
        # Parameters, not plain tensors: torch.compile then takes their shapes as fixed, where
        # a plain tensor's rows (256, say) would join a dynamic size of the same value (a
        # cache length) and tie it, compiling again for each cache length.
        self.weight = _frozen(torch.cat([linear.weight for linear in linears]))
        biases = [linear.bias for linear in linears]
        self.bias = None if biases[0] is None else _frozen(torch.cat(biases))
        self.sizes = [linear.out_features for linear in linears]
        self._input = self._parts = None
        self._unread = set()

    def part(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        """Return part ``index`` of the product for ``hidden``: computed once for all parts."""
        if self._input is not hidden or index not in self._unread:
            self._input = hidden
            product = nn.functional.linear(hidden, self.weight, self.bias)
            # contiguous, as a Linear's output is: on a CPU, strided inputs take scalar loops
            # (SiLU's exp among them) that round otherwise; compiled, the copies fuse away
            self._parts = [part.contiguous() for part in product.split(self.sizes, dim=-1)]
            self._unread = set(range(len(self.sizes)))
        self._unread.discard(index)
        taken = self._parts[index]
        if not self._unread:  # every part taken: keep no activation between forwards
            self._input = self._parts = None
        return taken


class FusedPart(nn.Linear):
    """One projection of a group: a Linear over its rows of the stacked weight."""

    def __init__(self, product: _Product, index: int):
        start, size = sum(product.sizes[:index]), product.sizes[index]
        nn.Module.__init__(self)
        self.in_features, self.out_features = product.weight.shape[1], size
        self.weight = _frozen(product.weight[start:start + size])
        self.bias = None if product.bias is None else _frozen(product.bias[start:start + size])
        self._product, self._index = product, index

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """Return this projection of ``hidden``, the group's product computed once per input."""
        return self._product.part(self._index, hidden)


def fuse_projections(decoder) -> int:
    """Stack the q/k/v and gate/up weights of every layer of ``decoder``; return the groups made.

    A group whose projections are not plain Linears of one input size, or mix biased and
    unbiased ones, is left as it is; one already fused is not fused again.
    """
    made = 0
    for layer in getattr(decoder, 'layers', ()):
        for owner_name, names in GROUPS:
            owner = getattr(layer, owner_name, None)
            linears = [getattr(owner, name, None) for name in names]
            if not _fusable(linears):
                continue
            with torch.no_grad():
                product = _Product(linears)
            for index, name in enumerate(names):
                setattr(owner, name, FusedPart(product, index))
            made += 1
    return made


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    """Return ``tensor`` (its storage, not a copy) as a parameter no gradient is kept for."""
    return nn.Parameter(tensor.detach(), requires_grad=False)


def _fusable(linears: list) -> bool:
    """Whether these modules are plain Linears of one input size, all biased or none."""
    if not all(type(linear) is nn.Linear for linear in linears):
        return False
    return (len({linear.in_features for linear in linears}) == 1
            and len({linear.bias is None for linear in linears}) == 1
            and len({(linear.weight.dtype, linear.weight.device) for linear in linears}) == 1)
