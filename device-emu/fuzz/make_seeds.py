#!/usr/bin/env python3
"""Builds the fuzz seed corpus from a recorded QEMU session.

    make_seeds.py RECORDING OUT_DIR

RECORDING is a file device-emu wrote with BIGBAR_DEVICE_RECORD=DIR (chunks of
`[fd kinds: u8][len: u32 LE][message]`, see device_emu::transport). Writes:
- setup: every message up to the first region access (VERSION, DMA maps,
  region and interrupt queries, interrupt set-up, reset);
- window-N: the VERSION message followed by 48 consecutive messages starting
  at message N, every 256 messages;
- fds-*: VERSION followed by commands carrying descriptors QEMU did not send
  in this run (a memfd DMA map, eventfds, a pipe where a memfd belongs).
"""
import os
import struct
import sys

VERSION, DMA_MAP, SET_IRQS, REGION_READ = 1, 2, 8, 9
EVENTFD, MEMORY, OTHER = 0, 1, 2


def chunks(data):
    i = 0
    while i + 5 <= len(data):
        length = struct.unpack("<I", data[i + 1:i + 5])[0]
        yield data[i:i + 5 + length]
        i += 5 + length


def command(chunk):
    return struct.unpack("=H", chunk[7:9])[0]


def chunk(message, fds=0, kind=EVENTFD):
    return bytes([fds | kind << 4]) + struct.pack("<I", len(message)) + message


def message(cmd, payload, msg_id=0x77):
    return struct.pack("=HHIII", msg_id, cmd, 16 + len(payload), 0, 0) + payload


def main(recording, out):
    all_chunks = list(chunks(open(recording, "rb").read()))
    version = all_chunks[0]
    assert command(version) == VERSION, "a session starts with VERSION"
    os.makedirs(out, exist_ok=True)

    def write(name, parts):
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"".join(parts))

    first_access = next(i for i, c in enumerate(all_chunks) if command(c) >= REGION_READ)
    write("setup", all_chunks[:first_access])
    for start in range(first_access, len(all_chunks), 256):
        write(f"window-{start:05}", [version] + all_chunks[start:start + 48])
    dma = struct.pack("=IIQQQ", 32, 3, 0, 0x100000, 0x200000)
    write("fds-dma-memfd", [version, chunk(message(DMA_MAP, dma), 1, MEMORY)])
    write("fds-dma-pipe", [version, chunk(message(DMA_MAP, dma), 1, OTHER)])
    irq = struct.pack("=IIIII", 20, 0x24, 2, 0, 1)  # DATA_EVENTFD | TRIGGER, MSI-X 0
    write("fds-msix-eventfd", [version, chunk(message(SET_IRQS, irq), 1, EVENTFD)])
    write("fds-msix-memfd", [version, chunk(message(SET_IRQS, irq), 1, MEMORY)])
    irqs = struct.pack("=IIIII", 20, 0x24, 2, 0, 2)  # two vectors: above max_msg_fds
    write("fds-msix-two-eventfds", [version, chunk(message(SET_IRQS, irqs), 2, EVENTFD)])


if __name__ == "__main__":
    main(*sys.argv[1:])
