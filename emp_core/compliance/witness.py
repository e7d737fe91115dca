"""The audit trail's witness: the head (seq, hash) a verification saw, kept outside the log so the next
verification can tell a log whose end was cut off (emp_core/compliance/audit.py). The Dagster asset keeps it
in its materialisation's metadata; this module is the rule for carrying it forward."""

from __future__ import annotations

from emp_core.compliance.audit import Verification


def next_witness(result: Verification, previous: tuple[int, str] | None) -> tuple[int, str] | None:
    """The witness to keep after ``result``: its head when the log verified (a log shorter than the previous
    witness never verifies against it), else the previous one, so a failed verification never erases what
    an earlier one saw."""
    if result.ok and result.head_seq:
        return result.head_seq, result.head_hash
    return previous


def witness_from(metadata: dict) -> tuple[int, str] | None:
    """The witness kept in a materialisation's metadata (``witness_seq``, ``witness_hash``), or None."""
    seq, digest = metadata.get("witness_seq"), metadata.get("witness_hash")
    if seq is None or not digest:
        return None
    return int(seq), str(digest)
