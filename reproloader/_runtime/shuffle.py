"""An epoch's shuffle order of ``[0, n)``: exact for small ``n``, a keyed bijection above.

Two constructions, chosen by ``n`` alone (:func:`epoch_order`), both a pure function of
the epoch's seed-tree node ``SeedTree(seed).node(Purpose.SHUFFLE, epoch)`` and ``n``, the
same on every rank and worker:

- ``n <= EXACT_MAX`` (:func:`exact_order`): a uniformly random permutation, built whole
  once per epoch. Each index gets a 64-bit word of ``PCG64(node)``'s raw stream and the
  order is the indices sorted by their words; where two words tie (probability below
  ``n**2 / 2**65``) all ``n`` words are drawn again from the stream, so the order is
  the ranking of ``n`` distinct i.i.d. uniform words: every one of the ``n!`` orders
  has the same probability. Only numpy's raw bit-generator stream and
  ``SeedSequence`` are used (numpy keeps both fixed across releases; ``Generator``
  methods such as ``permutation`` it does not), and with distinct words the sorted
  order does not depend on the sort algorithm. Below this size a Feistel network
  cannot be uniform: its round functions on halves of a few values each reach few of
  the ``n!`` orders (with 6 rounds, n=7 left 113 of the 5,040 orders unseen in
  50,400 draws). The order is at most :data:`BLOCK` indices: what the Feistel path
  would cache for its first block anyway.
- ``n > EXACT_MAX`` (:func:`permuted`): the keyed Feistel bijection below.
  ``permuted(n, keys, positions)`` gives the indices at ``positions`` of the order, as
  vectorized numpy ``uint64`` arithmetic, in time and memory proportional to
  ``len(positions)``: nothing of size ``n`` is ever built, so a 10**10-sample epoch
  starts (or resumes) at any position at once.

The Feistel network works over the two-dimensional domain ``Z_a x Z_b``, with
cycle-walking.

- ``a = ceil(sqrt(n))``, ``b = ceil(n / a)``, so ``n <= a * b < n + a``. A position
  ``x`` is the pair ``(L, R) = divmod(x, b)``. Each round maps ``(L, R)`` in
  ``Z_a x Z_b`` to ``(R, (L + F_r(R)) mod a)`` in ``Z_b x Z_a``: the halves swap and
  with them the moduli (the alternating-radix Feistel of NIST's FF1). Whatever the
  round function ``F_r``, a round is a bijection (its inverse subtracts ``F_r``), so
  the network is one on ``[0, a * b)``. Using ``Z_a x Z_b`` rather than the smallest
  power-of-two domain keeps the domain within ``a`` (about ``sqrt(n)``) of ``n``.
- **Cycle-walking** turns it into a bijection on ``[0, n)``: a result ``>= n`` is fed
  through the network again until it lands below ``n``. Following the network's
  cycle from a position below ``n`` reaches the next element below ``n`` of that
  cycle, and distinct starting points reach distinct ones, so this is a permutation
  of ``[0, n)``. A step leaves the range with probability ``(a*b - n) / (a*b)``, below
  ``1 / b`` (about ``1 / sqrt(n)``), so almost every position needs one pass; the loop
  runs again only over the few that left the range.
- **Round function**: ``F_r(R) = (hi32(mix(R ^ k_r)) * m) >> 32``, where ``k_r`` is
  round ``r``'s 64-bit key, ``mix`` is the xorshift-multiply finalizer of SplitMix64
  (a bijection on 64-bit words with full avalanche; its last xorshift, which only
  folds high bits into low ones, is left out because only the high 32 bits are used),
  and the multiply-shift maps those 32 bits onto ``[0, m)`` (bias below ``m / 2**32``). Luby and Rackoff
  showed four rounds of independent pseudorandom functions give a strong pseudorandom
  permutation; the network runs :data:`ROUNDS` rounds, each with its own key, for
  margin. This is about statistical quality (no position predicts its index), not
  secrecy: it is not a cipher.
- **Keys** are :data:`ROUNDS` words from the epoch's seed-tree node
  ``SeedTree(seed).node(Purpose.SHUFFLE, epoch)``: derived, never added, so the order
  is a pure function of ``(seed, epoch, n)``, the same on every rank and worker.

:class:`Shuffle` binds ``n`` and the keys (or the exact order) of one epoch and caches
the blocks of :data:`BLOCK` positions last computed, so cutting that epoch into small batches costs
one vectorized pass per block instead of one per batch; :class:`EpochOrders` keeps a
sampler's current one.

Changing anything here changes the order users get: ``tests/golden`` pins it and a
change needs a ``stream`` changelog entry. State format version 4 marks the exact
orders of ``n <= EXACT_MAX`` (they replaced the Feistel's there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLOCK",
    "EXACT_MAX",
    "MAX_N",
    "ROUNDS",
    "EpochOrders",
    "Shuffle",
    "epoch_order",
    "exact_order",
    "permuted",
    "round_keys",
]

ROUNDS: Final = 6
"""Feistel rounds; each has its own 64-bit key."""

MAX_N: Final = 2**62
"""Largest supported ``n``: both halves stay below ``2**32``."""

BLOCK: Final = 8192
"""Positions :class:`Shuffle` computes at once for small ranges (and caches)."""

EXACT_MAX: Final = BLOCK
"""Largest ``n`` whose order is an exact uniform permutation (:func:`exact_order`).

At this size the whole order is one :data:`BLOCK`: the memory the Feistel path caches
for its first block, built in about the same time (an epoch's first batch: 330 us
against the Feistel's 290 us at n=8192; 30 us against 140 us at n=8; once per epoch,
``benchmarks/scale.py``). (State format version 4.)"""

# SplitMix64's finalizer (Steele, Lea and Flood 2014): xorshift-multiply steps.
_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_M2: Final = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S32 = (np.uint64(s) for s in (30, 27, 32))

Indices = npt.NDArray[np.int64]
Words = npt.NDArray[np.uint64]


def round_keys(node: np.random.SeedSequence) -> Words:
    """The :data:`ROUNDS` round keys of a seed-tree node (``(SHUFFLE, epoch)``)."""
    keys: Words = node.generate_state(ROUNDS, np.uint64)  # type: ignore[assignment]
    keys.flags.writeable = False
    return keys


def exact_order(node: np.random.SeedSequence, n: int) -> Indices:
    """A uniformly random permutation of ``[0, n)`` keyed by ``node`` (read-only).

    The indices ranked by ``n`` words of ``PCG64(node)``'s raw stream, drawn again
    until no two tie: every order has probability ``1 / n!``. O(n log n) time, O(n)
    memory: for ``n <= EXACT_MAX``.
    """
    if not 0 <= n <= EXACT_MAX:
        raise ValueError(f"n must be in [0, {EXACT_MAX}] for an exact order, got {n}")
    bits = np.random.PCG64(node)
    while True:
        words = bits.random_raw(n)
        order = np.argsort(words)
        ranked = words[order]
        if not (ranked[1:] == ranked[:-1]).any():  # distinct words: one ranking, uniform
            break
    order.flags.writeable = False
    return order


def _sides(n: int) -> tuple[int, int]:
    """``(a, b)`` with ``a = ceil(sqrt(n))`` and ``b = ceil(n / a)``: ``n <= a * b < n + a``."""
    a = math.isqrt(n - 1) + 1 if n > 1 else 1
    return a, max(1, -(-n // a))


def _network(x: Words, keys: Words, a: np.uint64, b: np.uint64) -> Words:
    """One pass of the Feistel network over ``[0, a * b)``, in place where it can be.

    Every step is a whole-array ufunc writing into preallocated buffers: at a few
    thousand positions the arithmetic, not numpy's per-call overhead, is the cost.
    """
    left = x // b
    right = x - left * b
    f = np.empty_like(x)
    t = np.empty_like(x)
    moduli = (a, b)
    for r in range(ROUNDS):
        modulus = moduli[r % 2]  # left lives in Z_a on even rounds, Z_b on odd ones
        # f = F_r(right): keyed SplitMix64 mixing, then its high 32 bits scaled to the modulus
        np.bitwise_xor(right, keys[r], out=f)
        np.right_shift(f, _S30, out=t)
        f ^= t
        f *= _M1
        np.right_shift(f, _S27, out=t)
        f ^= t
        f *= _M2
        f >>= _S32
        f *= modulus  # < 2**32 * 2**32: no wrap-around
        f >>= _S32
        # left = (left + f) mod modulus: both are below it, and where the sum is too,
        # sum - modulus wraps around to a huge uint64, so the minimum is the residue.
        left += f
        np.subtract(left, modulus, out=t)
        np.minimum(left, t, out=left)
        left, right = right, left
    # After an even number of rounds the halves are back in Z_a x Z_b.
    left *= b
    left += right
    return left


def permuted(n: int, keys: Words, positions: npt.ArrayLike) -> Indices:
    """The indices at ``positions`` of the order ``keys`` gives ``[0, n)``.

    Args:
        n: the size of the domain, in ``[0, 2**62]``.
        keys: :func:`round_keys` of the epoch's node.
        positions: ints in ``[0, n)`` (any shape).

    Returns:
        An int64 array of the shape of ``positions``: distinct positions give
        distinct indices, and ``positions = arange(n)`` gives a permutation.

    Raises:
        ValueError: ``n`` out of range, or a position outside ``[0, n)``.
    """
    if not 0 <= n <= MAX_N:
        raise ValueError(f"n must be in [0, {MAX_N}], got {n}")
    pos = np.asarray(positions)
    if pos.size and (pos.min() < 0 or pos.max() >= n):
        raise ValueError(f"positions must be in [0, {n}), got values in [{pos.min()}, {pos.max()}]")
    if n <= 1:
        return pos.astype(np.int64)
    a, b = _sides(n)
    ua, ub, un = np.uint64(a), np.uint64(b), np.uint64(n)
    x = _network(pos.astype(np.uint64).ravel(), keys, ua, ub)
    out = np.flatnonzero(x >= un)
    while out.size:  # cycle-walking, only over the elements still out of range
        walked = _network(x[out], keys, ua, ub)
        x[out] = walked
        out = out[walked >= un]
    return x.view(np.int64).reshape(pos.shape)


class Shuffle:
    """One epoch's order of ``[0, n)``: ``indices(start, stop)`` at any positions.

    Ranges shorter than :data:`BLOCK` are cut from a cached block of
    :data:`BLOCK` aligned positions, so consecutive small batches share one
    vectorized computation. Memory: two blocks, whatever ``n``.

    Args:
        n: the number of samples.
        keys: :func:`round_keys` of the epoch's node (the Feistel order), or None
            with ``whole``.
        whole: the whole order, where it was built exactly (:func:`exact_order`).
    """

    __slots__ = ("_blocks", "_whole", "keys", "n")

    def __init__(self, n: int, keys: Words | None, *, whole: Indices | None = None) -> None:
        if not 0 <= n <= MAX_N:
            raise ValueError(f"n must be in [0, {MAX_N}], got {n}")
        if (keys is None) == (whole is None) or (whole is not None and len(whole) != n):
            raise ValueError(f"Shuffle needs either keys or a whole order of {n} indices")
        self.n = n
        self.keys = keys
        self._whole = whole
        # A whole order is its blocks, all cached (views of it).
        self._blocks: dict[int, Indices] = (
            {}
            if whole is None
            else {k: whole[k * BLOCK : (k + 1) * BLOCK] for k in range(-(-n // BLOCK))}
        )

    @property
    def exact(self) -> bool:
        """Whether the order is an exact uniform permutation (built whole)."""
        return self._whole is not None

    def __len__(self) -> int:
        return self.n

    def indices(self, start: int, stop: int) -> Indices:
        """The indices at positions ``start .. stop - 1`` (read-only when cached)."""
        first = start // BLOCK
        if 0 <= start < stop <= self.n and (stop - 1) // BLOCK == first:
            # The common case, a batch inside one block: one lookup and a slice.
            block = self._blocks.get(first)
            if block is None:
                block = self._block(first)
            offset = first * BLOCK
            return block[start - offset : stop - offset]
        if not 0 <= start <= stop <= self.n:
            raise ValueError(f"need 0 <= start <= stop <= {self.n}, got {start}, {stop}")
        if start == stop:
            return np.empty(0, dtype=np.int64)
        if self._whole is not None:
            return self._whole[start:stop]
        if stop - start >= BLOCK:
            return self._permuted(start, stop)
        last = (stop - 1) // BLOCK
        head = self._block(first)[start - first * BLOCK :]
        return np.concatenate((head, self._block(last)[: stop - last * BLOCK]))

    def _permuted(self, start: int, stop: int) -> Indices:
        assert self.keys is not None  # a whole order has all its blocks
        return permuted(self.n, self.keys, np.arange(start, stop, dtype=np.uint64))

    def _block(self, number: int) -> Indices:
        block = self._blocks.get(number)
        if block is None:
            begin = number * BLOCK
            block = self._permuted(begin, min(begin + BLOCK, self.n))
            block.flags.writeable = False
            if len(self._blocks) >= 2:  # keep one more, for ranges across a boundary
                self._blocks.pop(next(iter(self._blocks)))  # the older one
            self._blocks[number] = block
        return block


def epoch_order(node: np.random.SeedSequence, n: int) -> Shuffle:
    """The order of ``[0, n)`` keyed by an epoch's node: exact up to :data:`EXACT_MAX`."""
    if 0 <= n <= EXACT_MAX:
        return Shuffle(n, None, whole=exact_order(node, n))
    return Shuffle(n, round_keys(node))


class EpochOrders:
    """A sampler's orders, one per epoch, keyed by ``node(epoch)``; the last one is kept.

    Args:
        node: the seed-tree node of an epoch's order, e.g.
            ``functools.partial(tree.node, Purpose.SHUFFLE)``.
    """

    __slots__ = ("_last", "_node")

    def __init__(self, node: Callable[[int], np.random.SeedSequence]) -> None:
        self._node = node
        self._last: tuple[int, Shuffle] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # Cached blocks are per process; a copy rebuilds what it uses.
        return (EpochOrders, (self._node,))

    def get(self, epoch: int, n: int) -> Shuffle:
        """The order of ``[0, n)`` for ``epoch``."""
        last = self._last
        if last is not None and last[0] == epoch and last[1].n == n:
            return last[1]
        shuffle = epoch_order(self._node(epoch), n)
        self._last = (epoch, shuffle)
        return shuffle
