"""Capture file reading: classic pcap and pcapng -> `RawPacket`s. No scapy.

Guarantees:
- Formats: classic pcap in either byte order, microsecond (a1b2c3d4) and
  nanosecond (a1b23c4d) magic, and the Kuznetzov variant (a1b2cd34); pcapng with any
  number of sections (each with its own byte order), interfaces of different link
  types, `if_tsresol` and `if_tsoffset`, Enhanced, Simple and obsolete Packet
  blocks; every other block type is skipped by its length.
- Each `RawPacket` carries the record's link type and wire length (`orig_len`).
- The file is memory-mapped and parsed with `struct.unpack_from`; a record's bytes
  are copied only after its length was checked against the file, so a header
  claiming a 4 GB record allocates nothing.
- A broken or cut-off file yields every good record first, then raises
  `CaptureError` (a ValueError) whose str() is one line: "PATH: REASON at offset N".
  Nothing else escapes for bad file content (I/O errors such as a missing file are
  raised as CaptureError too).
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Iterable, Iterator

from egress.types import RawPacket

__all__ = ["CaptureError", "Capture", "open_capture", "read_capture", "iter_capture_paths",
           "CAPTURE_SUFFIXES"]

CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")

# Bigger than any real snap length (libpcap's maximum is 256 KiB; 802.11 jumbo ~ 1 MB).
MAX_RECORD = 1 << 24

_PCAP_MAGIC = {
    # magic as read little-endian -> (byte order, time units per second, extra record bytes)
    0xA1B2C3D4: ("<", 1_000_000, 0),
    0xD4C3B2A1: (">", 1_000_000, 0),
    0xA1B23C4D: ("<", 1_000_000_000, 0),
    0x4D3CB2A1: (">", 1_000_000_000, 0),
    0xA1B2CD34: ("<", 1_000_000, 8),
    0x34CDB2A1: (">", 1_000_000, 8),
}
_PCAPNG_SHB = 0x0A0D0D0A
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_LINKTYPE_MASK = 0x03FFFFFF      # the upper bits of the pcap header field carry FCS info


class CaptureError(ValueError):
    """A capture file that cannot be read (further). str() is one line."""


class Capture:
    """One open capture file. Iterate `records()` once; `offset` tells how far it got
    (updated as records are yielded: progress = offset / size), `size` the file size, `format` "pcap" or "pcapng", `linktypes`
    the link types seen so far, `count` the records yielded."""

    def __init__(self, path):
        self.path = Path(path)
        self.name = str(path)
        self.offset = 0
        self.count = 0
        self.linktypes: list[int] = []
        self.format = ""
        try:
            with open(self.path, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                if self.size == 0:
                    self._buf: bytes | mmap.mmap = b""
                else:
                    self._buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:     # ValueError: mmap of an odd file (a FIFO...)
            raise CaptureError("%s: %s" % (self.name, getattr(exc, "strerror", None) or exc)) from None
        if self.size < 4:
            self.close()
            raise CaptureError("%s: not a pcap or pcapng file (too short)" % self.name)
        (magic,) = struct.unpack_from("<I", self._buf, 0)
        if magic in _PCAP_MAGIC:
            self.format = "pcap"
        elif magic == _PCAPNG_SHB:
            self.format = "pcapng"
        else:
            self.close()
            raise CaptureError("%s: not a pcap or pcapng file" % self.name)

    def close(self) -> None:
        buf, self._buf = self._buf, b""
        if isinstance(buf, mmap.mmap):
            try:
                buf.close()
            except BufferError:
                pass    # a consumer still holds a view; the GC closes it later

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _error(self, reason: str, offset: int) -> CaptureError:
        return CaptureError("%s: %s at offset %d" % (self.name, reason, offset))

    def records(self) -> Iterator[RawPacket]:
        try:
            if self.format == "pcap":
                yield from self._pcap()
            else:
                yield from self._pcapng()
        finally:
            self.close()

    # --- classic pcap ---------------------------------------------------------------------

    def _pcap(self) -> Iterator[RawPacket]:
        buf, size = self._buf, self.size
        if size < 24:
            raise self._error("truncated file header", 0)
        (magic,) = struct.unpack_from("<I", buf, 0)
        bo, units, extra = _PCAP_MAGIC[magic]
        linktype = struct.unpack_from(bo + "I", buf, 20)[0] & _LINKTYPE_MASK
        self.linktypes.append(linktype)
        rec = struct.Struct(bo + "IIII")
        unpack = rec.unpack_from
        hdr = 16 + extra
        off = 24
        n = 0
        try:
            while off < size:
                if off + hdr > size:
                    raise self._error("truncated record header", off)
                sec, frac, caplen, wirelen = unpack(buf, off)
                start = off + hdr
                end = start + caplen
                if caplen > MAX_RECORD:
                    raise self._error("record length %d too large" % caplen, off)
                if end > size:
                    raise self._error("truncated record", off)
                off = self.offset = end
                n += 1
                yield RawPacket(sec + frac / units, buf[start:end], linktype, wirelen if wirelen > caplen else caplen)
        finally:
            self.offset = off
            self.count += n

    # --- pcapng ---------------------------------------------------------------------------

    def _pcapng(self) -> Iterator[RawPacket]:
        buf, size = self._buf, self.size
        off = 0
        n = 0
        bo = "<"
        head = struct.Struct("<II")
        epb = struct.Struct("<IIIII")
        epb7 = struct.Struct("<IIIIIII").unpack_from
        # per interface of the current section: (linktype, units per second, offset seconds, snaplen)
        ifaces: list[tuple[int, int, int, int]] = []
        try:
            while off < size:
                if off + 28 <= size:
                    # Fast path: a well-formed Enhanced Packet Block, header read in one call.
                    btype, blen, ifid, hi, lo, caplen, wirelen = epb7(buf, off)
                    if (btype == 6 and ifid < len(ifaces) and 32 <= blen
                            and caplen + 32 <= blen and not blen & 3 and off + blen <= size):
                        linktype, units, tsoff, _snap = ifaces[ifid]
                        n += 1
                        start = off + 28
                        off = self.offset = off + blen
                        yield RawPacket(tsoff + ((hi << 32) | lo) / units, buf[start:start + caplen],
                                        linktype, wirelen if wirelen > caplen else caplen)
                        continue
                if off + 12 > size:
                    raise self._error("truncated block header", off)
                btype, blen = head.unpack_from(buf, off)
                if btype == _PCAPNG_SHB:                 # the same bytes in either byte order
                    bo = self._section_byte_order(off)
                    head = struct.Struct(bo + "II")
                    epb = struct.Struct(bo + "IIIII")
                    epb7 = struct.Struct(bo + "IIIIIII").unpack_from
                    ifaces = []
                    btype, blen = head.unpack_from(buf, off)
                if blen < 12 or blen & 3:
                    raise self._error("bad block length %d" % blen, off)
                if off + blen > size:
                    raise self._error("truncated block", off)
                if btype == 6:                                       # Enhanced Packet Block
                    if blen < 32:
                        raise self._error("short enhanced packet block", off)
                    ifid, hi, lo, caplen, wirelen = epb.unpack_from(buf, off + 8)
                    if ifid >= len(ifaces):
                        raise self._error("packet for undeclared interface %d" % ifid, off)
                    start = off + 28
                    if start + caplen > off + blen - 4:
                        raise self._error("packet data beyond its block", off)
                    linktype, units, tsoff, _snap = ifaces[ifid]
                    n += 1
                    off += blen
                    self.offset = off
                    yield RawPacket(tsoff + ((hi << 32) | lo) / units, buf[start:start + caplen],
                                    linktype, wirelen if wirelen > caplen else caplen)
                    continue
                body, end = off + 8, off + blen - 4
                if btype == 3:                                     # Simple Packet Block
                    if not ifaces:
                        raise self._error("packet for undeclared interface 0", off)
                    if end - body < 4:
                        raise self._error("short simple packet block", off)
                    (wirelen,) = struct.unpack_from(bo + "I", buf, body)
                    linktype, _units, _tsoff, snap = ifaces[0]
                    caplen = min(wirelen, end - body - 4)
                    if snap:
                        caplen = min(caplen, snap)
                    n += 1
                    # No timestamp in an SPB: the best we can say is "unknown" (0).
                    yield RawPacket(0.0, buf[body + 4:body + 4 + caplen], linktype,
                                    max(wirelen, caplen))
                elif btype == 2:                                     # obsolete Packet Block
                    if end - body < 20:
                        raise self._error("short packet block", off)
                    ifid, _drops, hi, lo, caplen, wirelen = struct.unpack_from(
                        bo + "HHIIII", buf, body)
                    if ifid >= len(ifaces):
                        raise self._error("packet for undeclared interface %d" % ifid, off)
                    if body + 20 + caplen > end:
                        raise self._error("packet data beyond its block", off)
                    linktype, units, tsoff, _snap = ifaces[ifid]
                    n += 1
                    yield RawPacket(tsoff + ((hi << 32) | lo) / units,
                                    buf[body + 20:body + 20 + caplen], linktype,
                                    wirelen if wirelen > caplen else caplen)
                elif btype == 1:                                     # Interface Description
                    ifaces.append(self._interface(bo, body, end, off))
                    self.linktypes.append(ifaces[-1][0])
                off += blen
                self.offset = off
        finally:
            self.offset = off
            self.count += n

    def _section_byte_order(self, off: int) -> str:
        if off + 12 > self.size:
            raise self._error("truncated section header", off)
        (magic,) = struct.unpack_from("<I", self._buf, off + 8)
        if magic == _BYTE_ORDER_MAGIC:
            return "<"
        if magic == 0x4D3C2B1A:
            return ">"
        raise self._error("bad byte-order magic in section header", off)

    def _interface(self, bo: str, body: int, end: int, off: int) -> tuple[int, int, int, int]:
        if end - body < 8:
            raise self._error("short interface description block", off)
        linktype, _reserved, snaplen = struct.unpack_from(bo + "HHI", self._buf, body)
        units, tsoff = 1_000_000, 0
        p = body + 8
        opt = struct.Struct(bo + "HH")
        while p + 4 <= end:
            code, length = opt.unpack_from(self._buf, p)
            if code == 0:
                break
            value = p + 4
            if value + length > end:
                raise self._error("interface option beyond its block", off)
            if code == 9 and length >= 1:                      # if_tsresol
                res = self._buf[value]
                exp = res & 0x7F
                if exp > (63 if res & 0x80 else 18):
                    raise self._error("unsupported if_tsresol %d" % res, off)
                units = 1 << exp if res & 0x80 else 10 ** exp
            elif code == 14 and length >= 8:                   # if_tsoffset (seconds)
                (tsoff,) = struct.unpack_from(bo + "q", self._buf, value)
            p = value + ((length + 3) & ~3)
        return linktype, units, tsoff, snaplen


def open_capture(path) -> Capture:
    """Open a capture file (raises CaptureError for unreadable or non-capture files)."""
    return Capture(path)


def read_capture(path) -> Iterator[RawPacket]:
    """Every record of a pcap/pcapng file as a RawPacket, then CaptureError if broken.
    Lazy: even an unreadable or non-capture file raises only when iterated."""
    yield from Capture(path).records()


def iter_capture_paths(paths: Iterable) -> list[Path]:
    """Files as given, directories expanded recursively to their .pcap/.pcapng/.cap
    files in sorted order (for `egress replay DIR`)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*")
                              if f.is_file() and f.name.lower().endswith(CAPTURE_SUFFIXES)))
        else:
            out.append(p)
    return out
