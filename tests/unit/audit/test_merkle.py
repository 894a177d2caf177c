"""RFC 9162 hashing: known answers, the streaming frontier against the recursive definition, proofs."""

from __future__ import annotations

import hashlib

import pytest

from guard.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    aligned_roots,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_inclusion,
    subtree_root,
)
from guard.errors import AuditError

# The eight leaves of the RFC 6962 / Certificate Transparency reference test tree.
CT_LEAVES = [bytes.fromhex(h) for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                        "606162636465666768696a6b6c6d6e6f"]]


def mth(data: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 written independently of the module under test."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < len(data):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(data[:k]) + mth(data[k:])).digest()


def test_known_answers() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    leaves = [leaf_hash(d) for d in CT_LEAVES]
    assert leaves[0].hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert subtree_root(leaves, 0, 8).hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@pytest.mark.parametrize("n", list(range(0, 70)))
def test_frontier_matches_definition(n: int) -> None:
    data = [i.to_bytes(2, "big") * (i % 5) for i in range(n)]
    f = Frontier()
    for d in data:
        f.append(leaf_hash(d))
    assert f.size == n
    assert f.root() == mth(data)
    assert len(f.stack) == n.bit_count()


def test_frontier_restored_from_stack_continues() -> None:
    f = Frontier()
    for i in range(11):
        f.append(leaf_hash(bytes([i])))
    g = Frontier(f.size, f.stack)
    for i in range(11, 20):
        f.append(leaf_hash(bytes([i])))
        g.append(leaf_hash(bytes([i])))
    assert f.root() == g.root()
    with pytest.raises(AuditError, match="needs 3 hashes"):
        Frontier(11, f.stack[:1])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 31, 33])
def test_inclusion_proofs_for_every_leaf(size: int) -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(size)]
    root = subtree_root(leaves, 0, size)
    for i in range(size):
        proof = inclusion_proof(leaves, i, size)
        assert root_from_inclusion(leaves[i], i, size, proof) == root
        if proof:
            bad = [node_hash(proof[0], proof[0]), *proof[1:]]
            assert root_from_inclusion(leaves[i], i, size, bad) != root
        other = leaves[(i + 1) % size]
        if size > 1:
            assert root_from_inclusion(other, i, size, proof) != root


def test_malformed_proofs_raise() -> None:
    leaves = [leaf_hash(bytes([i])) for i in range(6)]
    proof = inclusion_proof(leaves, 2, 6)
    with pytest.raises(AuditError, match="shorter"):
        root_from_inclusion(leaves[2], 2, 6, proof[:-1])
    with pytest.raises(AuditError, match="longer"):
        root_from_inclusion(leaves[2], 2, 6, [*proof, proof[0]])
    with pytest.raises(AuditError, match="outside"):
        root_from_inclusion(leaves[2], 6, 6, proof)
    with pytest.raises(AuditError, match="no inclusion proof"):
        inclusion_proof(leaves, 6, 6)


@pytest.mark.parametrize("first", [0, 1, 2, 3, 5, 8, 13, 64, 100, 1023, 1024])
@pytest.mark.parametrize("count", [1, 2, 3, 7, 8, 31, 64, 100])
def test_a_run_folded_into_aligned_subtrees_gives_the_frontier_of_every_leaf(first: int, count: int) -> None:
    """The parallel verifier appends a run of leaves as the subtrees it fills; the frontier (and so every
    later root a checkpoint is compared with) must be the one appending each leaf gives."""
    data = [i.to_bytes(4, "big") for i in range(first + count + 5)]
    leaves = [leaf_hash(d) for d in data]
    one_by_one, folded = Frontier(), Frontier()
    for h in leaves[:first]:
        one_by_one.append(h)
        folded.append(h)
    for h in leaves[first:first + count]:
        one_by_one.append(h)
    roots = aligned_roots(leaves[first:first + count], first)
    assert sum(1 << height for height, _ in roots) == count
    for height, root in roots:
        folded.append_subtree(root, height)
    assert (folded.size, folded.stack) == (one_by_one.size, one_by_one.stack)
    for h in leaves[first + count:]:  # and it goes on as one
        one_by_one.append(h)
        folded.append(h)
    assert folded.root() == one_by_one.root() == mth(data)


def test_a_subtree_cannot_join_a_frontier_out_of_alignment() -> None:
    frontier = Frontier()
    frontier.append(leaf_hash(b"a"))
    with pytest.raises(AuditError, match="height 1 cannot join a frontier of size 1"):
        frontier.append_subtree(leaf_hash(b"b"), 1)
