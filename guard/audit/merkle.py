"""RFC 9162 Merkle tree hashing, kept streaming so a verifier's memory does not grow with the log.

Leaf hash = SHA-256(0x00 || line), node hash = SHA-256(0x01 || left || right). The tree over n leaves
splits at the largest power of two below n, so the running state is the "frontier": the roots of the
perfect subtrees the leaves so far decompose into (one per set bit of n, at most 64).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from guard.errors import AuditError

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


class Frontier:
    """Compact range [0, size): append leaf hashes, read the root at the current size at any time."""

    __slots__ = ("size", "stack")

    def __init__(self, size: int = 0, stack: Sequence[bytes] = ()) -> None:
        if len(stack) != size.bit_count():
            raise AuditError(f"frontier of size {size} needs {size.bit_count()} hashes, got {len(stack)}")
        self.size = size
        self.stack = list(stack)

    def append(self, leaf: bytes) -> None:
        h = leaf
        n = self.size
        stack = self.stack
        while n & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self.size += 1

    def append_subtree(self, root: bytes, height: int) -> None:
        """Append the 2**height leaves whose perfect subtree has hash `root`: the same state as appending
        them one by one, in a few hashes. Only at an aligned size (a multiple of 2**height)."""
        n = self.size
        if n & ((1 << height) - 1):
            raise AuditError(f"a subtree of height {height} cannot join a frontier of size {n}")
        h = root
        stack = self.stack
        n >>= height
        while n & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self.size += 1 << height

    def root(self) -> bytes:
        stack = self.stack
        if not stack:
            return EMPTY_ROOT
        h = stack[-1]
        for left in reversed(stack[:-1]):
            h = _sha256(b"\x01" + left + h).digest()
        return h

    def copy(self) -> Frontier:
        return Frontier(self.size, self.stack)


def aligned_roots(leaves: Sequence[bytes], first: int) -> tuple[tuple[int, bytes], ...]:
    """Leaf hashes of leaves [first, first + len(leaves)) as the aligned perfect subtrees they cover, left
    to right, (height, hash) each: appended with `Frontier.append_subtree` at size `first`, they give the
    frontier appending every leaf would. Each is the largest subtree that starts at its index's alignment
    and fits, so a run of n leaves folds into at most about 2*log2(n) subtrees."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(leaves)
    sha256 = _sha256
    while i < n:
        at = first + i
        size = at & -at if at else 1 << 62
        while size > n - i:
            size >>= 1
        level = list(leaves[i:i + size])
        while len(level) > 1:
            it = iter(level)
            level = [sha256(b"\x01" + left + right).digest() for left, right in zip(it, it, strict=True)]
        out.append((size.bit_length() - 1, level[0]))
        i += size
    return tuple(out)


def subtree_root(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) over leaf hashes (RFC 9162 2.1.1)."""
    n = end - start
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[start]
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(subtree_root(leaves, start, start + k), subtree_root(leaves, start + k, end))


def inclusion_proof(leaves: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) from RFC 9162 2.1.3.1, leaf-to-root order."""
    if not 0 <= index < size <= len(leaves):
        raise AuditError(f"no inclusion proof for leaf {index} in a tree of size {size}")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        n = end - start
        k = 1 << ((n - 1).bit_length() - 1)
        if index - start < k:
            path.append(subtree_root(leaves, start + k, end))
            end = start + k
        else:
            path.append(subtree_root(leaves, start, start + k))
            start += k
    path.reverse()
    return path


def root_from_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root implied by an inclusion proof (RFC 9162 2.1.3.2); raises AuditError if malformed."""
    if not 0 <= index < size:
        raise AuditError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise AuditError("inclusion proof is longer than the tree allows")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise AuditError("inclusion proof is shorter than the tree requires")
    return r
