#!/usr/bin/env python3
"""Writes rpmdb.sqlite: an rpm ≥ 4.16 style SQLite rpm database for kiln-sbom's tests.

The Packages table (hnum INTEGER PRIMARY KEY, blob BLOB) holds rpm header blobs (il, dl,
il 16-byte index entries, the data store), as rpm writes them: `bash` with an epoch and a
source rpm, 299 small packages (enough rows for interior b-tree pages at 1 KiB pages) and
one header of about 5,000 bytes (overflow pages). Run: python3 make.py (deterministic).
"""
import os
import sqlite3
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def header(tags):
    index, data = b"", b""
    for tag, ty, value in tags:
        if ty == 4:
            while len(data) % 4:
                data += b"\0"
            off, blob, count = len(data), struct.pack(">I", value), 1
        else:
            off, blob, count = len(data), value.encode() + b"\0", 1
        data += blob
        index += struct.pack(">iIiI", tag, ty, off, count)
    return struct.pack(">II", len(tags), len(data)) + index + data


def main():
    path = os.path.join(HERE, "rpmdb.sqlite")
    if os.path.exists(path):
        os.remove(path)
    db = sqlite3.connect(path)
    db.execute("PRAGMA page_size=1024")
    db.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
    db.execute("CREATE TABLE Name (key TEXT NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL)")
    rows = [header([(1000, 6, "bash"), (1001, 6, "5.2.15"), (1002, 6, "3.fc38"), (1003, 4, 1),
                    (1014, 6, "GPL-3.0-or-later"), (1022, 6, "x86_64"),
                    (1044, 6, "bash-5.2.15-3.fc38.src.rpm")])]
    for i in range(1, 300):
        rows.append(header([(1000, 6, f"pkg{i}"), (1001, 6, f"1.{i}"), (1002, 6, "1"), (1022, 6, "noarch")]))
    rows.append(header([(1000, 6, "big"), (1001, 6, "1"), (1014, 6, "X" * 4000), (1022, 6, "x86_64")]))
    db.executemany("INSERT INTO Packages (blob) VALUES (?)", [(r,) for r in rows])
    db.commit()
    db.execute("VACUUM")
    db.close()


if __name__ == "__main__":
    main()
