"""Large values are stored compressed against a preset dictionary, and what the previous
format stored (compressed alone, or not at all) still reads."""

from __future__ import annotations

import json
import tracemalloc
import zlib

import pytest

from engine.state import audit, compact

RECORD = json.dumps({
    "execution_id": "953dabe1-6a9e-49d0-b20f-1d469b4409ad", "step": "review",
    "since": "2026-12-04T22:26:51.920Z", "approvers": ["U0ALICE", "U0BOB"],
    "restricted": True, "shown": ["S0SOCL1"],
    "posts": [{"to": "C0REVIEWS", "ts": "1796423211.929800"}],
    "review": {"workflow": "pausing", "step_type": "waitForInput",
               "message_sha256": "6cf776120b53034e9d5a53ae9a56e119137b86409cb87e32e28aa3a7fa21888a",
               "schema": {"type": "object", "properties": {
                   "approved": {"type": "boolean", "title": "Isolate"}}},
               "title": "## Isolate `web-00000`?"}}, separators=(",", ":"))


def test_a_record_is_stored_smaller_than_zlib_alone_makes_it_and_reads_back():
    stored = compact.pack(RECORD)
    assert len(stored) < len(zlib.compress(RECORD.encode(), 6))
    assert compact.unpack(stored) == RECORD


def test_the_dictionary_is_the_one_stored_values_were_written_with():
    # Editing it would make every value stored with it unreadable: add another instead.
    assert zlib.adler32(compact.DICTIONARY) == 1523731706


def test_values_of_the_previous_formats_still_read():
    assert compact.unpack(zlib.compress(RECORD.encode(), 6)) == RECORD
    assert compact.unpack(RECORD.encode()) == RECORD
    assert compact.unpack(compact.pack("short")) == "short"


def test_a_value_packed_with_an_unknown_dictionary_is_refused_not_misread():
    packer = zlib.compressobj(6, zdict=b"another dictionary")
    stored = packer.compress(RECORD.encode()) + packer.flush()
    with pytest.raises(ValueError, match="dictionary"):
        compact.unpack(stored)


def test_a_value_is_compressed_without_zlibs_64_kb_hash_table_and_reads_as_before():
    # At zlib's default memory level each compressor takes and clears a 64 KB hash table,
    # which glibc hands back and faults in again for every value: 20-45 us, against ~2 us.
    # zlib allocates through Python's allocator, so tracemalloc sees it.
    message = "isolate host web-00001: outbound C2 beacon from svchost.exe " * 40
    tracemalloc.start()
    try:
        stored = compact.pack(RECORD)
        entry = audit.packed({"type": "step.waiting_for_input", "message": message},
                             '{"host":"web-00001"}')
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 220_000, f"compressing took {peak} bytes at its peak"
    # Any zlib reader reads it: the memory level is not in the stream.
    assert stored[:1] == b"\x78" and compact.unpack(stored) == RECORD
    assert zlib.decompressobj(zdict=compact.DICTIONARY).decompress(stored).decode() == RECORD
    assert audit.unpacked(dict(entry), '{"host":"web-00001"}')["message"] == message
