"""queued.max.request.bytes holds with many large frames in a row: past the cap, one frame at a
time may finish (the finisher: partly read frames cannot wait on each other for ever), and only
while the bytes held are still within the cap; so they stay within the cap plus one frame
(server/request_memory.py), however many frames follow each other."""

from __future__ import annotations

from tests.unit.test_connection_framing import MIB, Reader, body, frame
from tidelog.server.request_memory import RequestMemory


class _Owner:
    def memory_available(self) -> None:
        pass


def test_frames_finished_one_after_another_past_the_cap_do_not_creep_up():
    memory = RequestMemory(4 * MIB, 16 * MIB)
    owners = [_Owner() for _ in range(12)]
    assert all(memory.try_grow(owner, MIB, MIB) for owner in owners[:4])  # the cap, in four frames
    assert memory.try_grow(owners[4], MIB, MIB)  # one frame past it: the finisher
    memory.frame_done(owners[4])
    # Before: each next frame became the finisher in turn (used + its buffer within cap +
    # overshoot), and the bytes held crept up to the cap plus the overshoot.
    assert not any(memory.try_grow(owner, MIB, MIB) for owner in owners[5:])
    assert memory.used == 5 * MIB
    memory.release(2 * MIB)  # answered: back within the cap, a finisher may start again
    assert memory.try_grow(owners[5], MIB, MIB)


def test_a_pipelined_stream_of_large_frames_holds_at_most_the_cap_plus_one_frame():
    """A producer pipelining ~1 MB Produce requests whose answers are held (an RF 3 leader held
    up to 158 MiB of them with a 128 MiB cap): reading pauses once the cap plus one frame is
    read, and resumes as they are answered."""
    reader = Reader(memory_bytes=4 * MIB, hold=True)
    bodies = [body(1_000_000, i) for i in range(24)]
    stream = b"".join(frame(b) for b in bodies)
    taken = reader.feed(stream)
    memory = reader.broker.request_memory
    assert reader.transport.paused and taken < len(stream)
    assert memory.used <= 5 * MIB, f"{memory.used / MIB:.1f} MiB held with a 4 MiB cap"
    assert memory.frames.in_use_bytes <= 5 * MIB
    while taken < len(stream):
        reader.answer_all()
        taken += reader.feed(stream[taken:])
        assert memory.used <= 5 * MIB
    reader.answer_all()
    assert reader.frames == bodies and memory.used == 0
