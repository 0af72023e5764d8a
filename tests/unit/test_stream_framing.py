"""The stream agent's frame format and modes, run for real as local subprocesses.

The agent normally runs on a storage host over ssh; here it runs with this
machine's Python through the same bootstrap and prelude, without ssh (the
one thing faked: the ssh hop, which the functional tests cover), on sparse
files in a temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stackhop.errors import IntegrityError
from stackhop.journal import ChunkRecord
from stackhop.transfer import stream_agent as agent
from stackhop.transfer.ssh_stream import AgentHost, PumpResult, _AckBook
from stackhop.volumes.model import VERIFY_CHUNK, ZERO_CHUNK_SHA256
from stackhop.volumes.stream import confirmed_digests, zero_digest

MIB = 1024 * 1024
SIZE = 64 * MIB


def run_agent(mode: str, params: dict[str, Any], stdin: bytes = b"") -> bytes:
    argv = [sys.executable, "-c", agent.BOOTSTRAP, str(len(_source())), mode]
    done = subprocess.run(
        argv, input=AgentHost.prelude(params) + stdin, capture_output=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(done.stderr.decode())
    return done.stdout


def _source() -> bytes:
    return Path(agent.__file__).read_bytes()


def frames(stream: bytes) -> list[tuple[int, int, int, int, int, bytes, bytes]]:
    found = []
    at = 0
    while at < len(stream):
        kind, codec, plen, offset, length, digest = agent.unpack_header(
            stream[at : at + agent.HEADER.size]
        )
        at += agent.HEADER.size
        found.append((kind, codec, plen, offset, length, digest, stream[at : at + plen]))
        at += plen
    return found


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    """64 MiB sparse: random at 4 MiB, text at 20 MiB, zeros at 40 MiB, a byte at 63 MiB."""
    path = tmp_path / "src"
    with open(path, "wb") as handle:
        handle.truncate(SIZE)
        handle.seek(4 * MIB)
        handle.write(os.urandom(6 * MIB))
        handle.seek(20 * MIB)
        handle.write(b"the quick brown fox jumps over the lazy dog\n" * 100000)
        handle.seek(40 * MIB)
        handle.write(bytes(4 * MIB))
        handle.seek(63 * MIB + 7)
        handle.write(b"x")
    return path


def chunk_digests(path: Path) -> list[str]:
    data = path.read_bytes()
    return [
        hashlib.sha256(data[o : o + VERIFY_CHUNK]).hexdigest() for o in range(0, SIZE, VERIFY_CHUNK)
    ]


def test_header_round_trip_and_garbage_is_refused() -> None:
    digest = hashlib.sha256(b"x").digest()
    raw = agent.pack_header(agent.DATA, agent.ZSTD, 123, 8 * MIB, VERIFY_CHUNK, digest)
    assert len(raw) == agent.HEADER.size
    assert agent.unpack_header(raw) == (agent.DATA, agent.ZSTD, 123, 8 * MIB, VERIFY_CHUNK, digest)
    with pytest.raises(ValueError, match="out of step"):
        agent.unpack_header(b"XX" + raw[2:])
    with pytest.raises(ValueError):
        agent.unpack_header(agent.pack_header(agent.ZERO, 0, 5, 0, VERIFY_CHUNK, agent.NO_DIGEST))


def test_codec_compresses_text_and_sends_random_raw() -> None:
    codec = agent.Codec()
    text = b"stackhop moves volumes " * 200000
    used, payload = codec.compress(agent.ZLIB, text)
    assert used == agent.ZLIB and len(payload) < len(text) // 10
    assert codec.decompress(used, payload, len(text)) == text
    noise = os.urandom(VERIFY_CHUNK)
    assert codec.compress(agent.ZLIB, noise) == (agent.RAW, noise)


def test_read_sends_only_data_chunks_and_zero_runs(volume: Path) -> None:
    out = frames(run_agent("read", {"path": str(volume), "size": SIZE, "codec": "zlib"}))
    data = [(f[3], f[4]) for f in out if f[0] == agent.DATA]
    zeros = [(f[3], f[4]) for f in out if f[0] == agent.ZERO]
    assert out[-1][0] == agent.END
    # 4-10 MiB random -> chunks at 4 and 8 MiB; text at 20 MiB spans 20-24.4 -> two chunks.
    assert [o // MIB for o, _ in data] == [4, 8, 20, 24, 60]
    # Holes and the explicit zeros come as runs between the data chunks, never as data.
    assert zeros == [(0, 4 * MIB), (12 * MIB, 8 * MIB), (28 * MIB, 32 * MIB)]
    expected = chunk_digests(volume)
    for kind, _, _, offset, _, digest, _ in out:
        if kind == agent.DATA:
            assert digest.hex() == expected[offset // VERIFY_CHUNK]
    text_frame = next(f for f in out if f[3] == 20 * MIB)
    assert text_frame[1] == agent.ZLIB and text_frame[2] < VERIFY_CHUNK // 10


def test_write_applies_frames_checks_digests_and_acknowledges(volume: Path, tmp_path: Path) -> None:
    stream = run_agent("read", {"path": str(volume), "size": SIZE, "codec": "zlib"})
    target = tmp_path / "dst"
    with open(target, "wb") as handle:
        handle.truncate(SIZE)
        handle.seek(30 * MIB)
        handle.write(b"stale data that a zero run must remove")
    answer = run_agent("write", {"path": str(target), "size": SIZE, "fsync_bytes": 4 * MIB}, stream)
    assert target.read_bytes() == volume.read_bytes()
    acks = [line.split() for line in answer.decode().splitlines() if line.startswith("A ")]
    assert sorted(int(a[1]) // MIB for a in acks if len(a) == 4) == [4, 8, 20, 24, 60]
    # Each chunk is acknowledged with the sha256 of what was read back from the disk, each
    # zero run with "" (it reads as zeros: the stale data at 30 MiB is gone).
    expected = chunk_digests(volume)
    assert all(a[3] == expected[int(a[1]) // VERIFY_CHUNK] for a in acks if len(a) == 4)
    assert {int(a[1]) // MIB for a in acks if len(a) == 3} == {0, 12, 28}
    end = json.loads(answer.decode().splitlines()[-1][2:])
    assert end["bytes"] == 5 * VERIFY_CHUNK


def test_write_refuses_a_chunk_whose_digest_does_not_match(volume: Path, tmp_path: Path) -> None:
    """Raw chunks are checked on request (ssh's MAC guards them); compressed ones always."""
    stream = bytearray(run_agent("read", {"path": str(volume), "size": SIZE, "codec": "raw"}))
    first = frames(bytes(stream))[1]  # the chunk at 4 MiB, after the leading zero run
    assert first[0] == agent.DATA
    position = agent.HEADER.size * 2 + 100
    stream[position] ^= 0xFF  # a flipped byte in the payload
    target = tmp_path / "dst"
    target.write_bytes(b"")
    os.truncate(target, SIZE)
    with pytest.raises(AssertionError, match="does not match its sha256"):
        run_agent("write", {"path": str(target), "size": SIZE, "check_raw": True}, bytes(stream))


def test_write_refuses_a_damaged_compressed_chunk(volume: Path, tmp_path: Path) -> None:
    stream = bytearray(run_agent("read", {"path": str(volume), "size": SIZE, "codec": "zlib"}))
    at = 0
    while True:  # find the compressed text chunk's payload
        kind, codec, plen, offset, _, _ = agent.unpack_header(
            bytes(stream[at : at + agent.HEADER.size])
        )
        at += agent.HEADER.size
        if codec == agent.ZLIB:
            break
        at += plen
    stream[at + plen // 2] ^= 0xFF
    target = tmp_path / "dst"
    target.write_bytes(b"")
    os.truncate(target, SIZE)
    with pytest.raises(
        AssertionError, match=f"chunk at {offset} (cannot be decompressed|does not)"
    ):
        run_agent("write", {"path": str(target), "size": SIZE}, bytes(stream))


def test_digests_hash_data_and_skip_holes(volume: Path) -> None:
    answer = json.loads(run_agent("digests", {"path": str(volume), "size": SIZE}))
    expected = chunk_digests(volume)
    zero = hashlib.sha256(bytes(VERIFY_CHUNK)).hexdigest()
    assert [d or zero for d in answer["digests"]] == expected
    assert answer["read"] < 12 * VERIFY_CHUNK  # the holes were not read
    some = json.loads(
        run_agent("digests", {"path": str(volume), "size": SIZE, "offsets": [20 * MIB]})
    )
    assert some["digests"] == [expected[5]]


def test_journal_rows_expand_zero_runs_to_chunk_digests() -> None:
    rows = {
        0: ChunkRecord("k", 0, 3 * VERIFY_CHUNK, ZERO_CHUNK_SHA256, "confirmed"),
        3 * VERIFY_CHUNK: ChunkRecord("k", 3 * VERIFY_CHUNK, VERIFY_CHUNK, "ab" * 32, "confirmed"),
        4 * VERIFY_CHUNK: ChunkRecord("k", 4 * VERIFY_CHUNK, VERIFY_CHUNK, "cd" * 32, "pending"),
    }
    digests = confirmed_digests(rows, 5 * VERIFY_CHUNK)
    assert digests == {
        0: ZERO_CHUNK_SHA256,
        VERIFY_CHUNK: ZERO_CHUNK_SHA256,
        2 * VERIFY_CHUNK: ZERO_CHUNK_SHA256,
        3 * VERIFY_CHUNK: "ab" * 32,
    }
    assert zero_digest(10) == hashlib.sha256(bytes(10)).hexdigest()


def test_acknowledgement_with_another_digest_is_not_confirmed() -> None:
    """A chunk read back differently from what was sent stays unconfirmed, and the pass
    fails naming it (a re-run sends it again)."""
    result = PumpResult()
    result.digests = {0: (VERIFY_CHUNK, "aa" * 32), VERIFY_CHUNK: (VERIFY_CHUNK, "")}
    confirmed: list[int] = []
    book = _AckBook(result, lambda offset, length, digest: confirmed.append(offset))
    book.line(f"A 0 {VERIFY_CHUNK} {'bb' * 32}\n".encode())
    book.line(f"A {VERIFY_CHUNK} {VERIFY_CHUNK} {agent.NOT_ZERO}\n".encode())
    assert confirmed == [] and result.mismatched == [0, VERIFY_CHUNK]
    with pytest.raises(IntegrityError, match="2 chunk\\(s\\) read back .*first at byte 0"):
        book.check("ssh dst-storage")
    book.line(f"A 0 {VERIFY_CHUNK} {'aa' * 32}\n".encode())  # sent again, read back right
    assert confirmed == [0] and result.confirmed == {0: (VERIFY_CHUNK, "aa" * 32)}


def test_read_with_the_destinations_digests_sends_only_what_differs(volume: Path) -> None:
    expected = chunk_digests(volume)
    compare = {
        str(4 * MIB): expected[1],  # the same there
        str(8 * MIB): "00" * 32,  # different there
        "0": "ab" * 32,  # data there, a hole here: a zero run goes
    }
    out = frames(run_agent("read", {"path": str(volume), "size": SIZE, "compare": compare}))
    summary = [(f[0], f[3] // MIB, f[4] // MIB) for f in out[:-1]]
    assert summary == [
        (agent.ZERO, 0, 4),
        (agent.SAME, 4, 4),
        (agent.DATA, 8, 4),
        (agent.SAME, 12, 8),  # zeros here and there: nothing to send
        (agent.DATA, 20, 4),
        (agent.DATA, 24, 4),
        (agent.SAME, 28, 32),
        (agent.DATA, 60, 4),
    ]
    same = next(f for f in out if f[0] == agent.SAME)
    assert same[5].hex() == expected[1] and same[6] == b""  # its digest, no data
