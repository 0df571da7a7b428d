"""Summary statistics of a CSV file and a PNG of each numeric column's histogram.

Reads the CSV named on the command line (a header row, then rows), writes to /outputs:
  summary.csv     one row per numeric column: count, mean, std, min, quartiles, max
  summary.json    the same, plus the mean of each numeric column per value of the first text column
  histograms.png  one histogram per numeric column (at most four), drawn with numpy, written with zlib + struct
Needs only numpy.
"""
import csv
import json
import os
import struct
import sys
import zlib

import numpy as np

OUT = os.environ.get("OUTPUT_DIR", "/outputs")
STATS = ["count", "mean", "std", "min", "25%", "median", "75%", "max"]


def read_table(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], [r for r in rows[1:] if r]
    columns = {name: [r[i] for r in body] for i, name in enumerate(header)}
    numeric, text = {}, {}
    for name, values in columns.items():
        try:
            numeric[name] = np.array([float(v) for v in values])
        except ValueError:
            text[name] = values
    return header, body, numeric, text


def describe(x):
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return {"count": int(x.size), "mean": float(x.mean()), "std": float(x.std(ddof=1)), "min": float(x.min()),
            "25%": float(q25), "median": float(q50), "75%": float(q75), "max": float(x.max())}


def histogram_png(numeric, path, width=640, height=480):
    img = np.full((height, width, 3), 255, dtype=np.uint8)
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    panel_w, panel_h = width // 2, height // 2
    for k, (name, x) in enumerate(list(numeric.items())[:4]):
        counts, _ = np.histogram(x, bins=20)
        x0, y0 = (k % 2) * panel_w + 20, (k // 2) * panel_h + 20
        w, h = panel_w - 40, panel_h - 40
        bar_w = w // len(counts)
        for i, c in enumerate(counts):
            bar_h = int(round(h * c / counts.max()))
            img[y0 + h - bar_h:y0 + h, x0 + i * bar_w + 1:x0 + (i + 1) * bar_w - 1] = colours[k]
        img[y0 + h, x0:x0 + w] = (60, 60, 60)   # x axis
        img[y0:y0 + h + 1, x0] = (60, 60, 60)   # y axis
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(height))   # filter type 0 per scanline

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))   # 8-bit RGB
        f.write(chunk(b"IDAT", zlib.compress(raw, 9)))
        f.write(chunk(b"IEND", b""))
    return width, height


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/inputs/data.csv"
    header, body, numeric, text = read_table(path)
    print(f"read {len(body)} rows, {len(header)} columns from {os.path.basename(path)} ({len(numeric)} numeric)")

    summary = {name: describe(x) for name, x in numeric.items()}
    width = max(len(n) for n in summary) + 2
    print("column".ljust(width) + "".join(s.rjust(10) for s in STATS))
    for name, s in summary.items():
        print(name.ljust(width) + f"{s['count']:>10d}" + "".join(f"{s[k]:>10.3f}" for k in STATS[1:]))

    groups = {}
    if text:
        key = next(iter(text))
        labels = np.array(text[key])
        for name, x in numeric.items():
            groups[name] = {g: float(x[labels == g].mean()) for g in sorted(set(text[key]))}
        print(f"mean by {key}".ljust(width) + "".join(n.rjust(max(len(n) + 2, 10)) for n in numeric))
        for g in sorted(set(text[key])):
            print(g.ljust(width) + "".join(f"{groups[n][g]:>{max(len(n) + 2, 10)}.3f}" for n in numeric))

    with open(os.path.join(OUT, "summary.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["column"] + STATS)
        for name, s in summary.items():
            w.writerow([name] + [s["count"]] + [f"{s[k]:.6f}" for k in STATS[1:]])
    with open(os.path.join(OUT, "summary.json"), "w") as f:
        json.dump({"rows": len(body), "columns": summary, "groupMeans": groups}, f, indent=2)
    w_px, h_px = histogram_png(numeric, os.path.join(OUT, "histograms.png"))
    print(f"wrote {OUT}/summary.csv, {OUT}/summary.json, {OUT}/histograms.png ({w_px}x{h_px})")


if __name__ == "__main__":
    main()
