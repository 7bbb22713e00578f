#!/usr/bin/env python3
"""Make the small, deterministic TLC samples bundled with lightops.

For each month, take every k-th row of the TLC file (k = ceil(rows / ROWS), starting at row 0),
keep every column and the file's own schema, and write it in the same format as the source:
parquet (zstd) for the parquet months, gzip CSV for 2020-06 (which exists only as CSV). No
randomness: the same source file always gives the same sample, byte for byte.

    python3 samples/make_samples.py [--data ../shared/data] [--rows 20000]

Sources are the real TLC files described in ../shared/data/README.md. The samples are used by the
tests that always run and by the offline `lightops demo`.

Why ~20,000 rows: drift statistics on the ~250 location categories need that many rows to be
dominated by real change rather than sampling noise. With ~5,000 rows the Jensen-Shannon distance
of every month's zone columns exceeds Evidently's 0.1 threshold from noise alone, so every sample
month "drifted"; at --rows 20000 (every 4th row of these months: 15,600-19,600 rows, ~2 MB in
all) the dataset-level verdicts match the full months (only 2020-06 drifts).
"""
import argparse
import gzip
import io
import math
import os

import pyarrow.csv as pacsv
import pyarrow.parquet as pq

MONTHS = [
    ("green_tripdata_2022-01.parquet", "train"),
    ("green_tripdata_2022-02.parquet", "validation"),
    ("green_tripdata_2022-03.parquet", "monitoring"),
    ("green_tripdata_2022-06.parquet", "monitoring"),
    ("green_tripdata_2020-06.csv.gz", "monitoring (CSV only)"),
]


def every_kth(table, rows):
    k = max(1, math.ceil(table.num_rows / rows))
    return table.take(list(range(0, table.num_rows, k))), k


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(here, "..", "..", "shared", "data"))
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()

    for name, role in MONTHS:
        source = os.path.join(args.data, name)
        if name.endswith(".parquet"):
            table = pq.read_table(source)
            sample, k = every_kth(table, args.rows)
            target = os.path.join(here, name.replace("green_tripdata", "green_sample"))
            pq.write_table(sample, target, compression="zstd")
        else:
            # Read every column as text so the sample keeps the source's exact spelling.
            table = pacsv.read_csv(source, convert_options=pacsv.ConvertOptions(
                column_types={c: "string" for c in pacsv.read_csv(source).column_names}))
            sample, k = every_kth(table, args.rows)
            buffer = io.BytesIO()
            pacsv.write_csv(sample, buffer, write_options=pacsv.WriteOptions(quoting_style="none"))
            target = os.path.join(here, name.replace("green_tripdata", "green_sample"))
            # mtime=0: the gzip header carries no time, so the bytes are reproducible.
            with gzip.GzipFile(target, "wb", mtime=0) as out:
                out.write(buffer.getvalue())
        print(f"{os.path.basename(target)}: {sample.num_rows} of {table.num_rows} rows (every {k}th), "
              f"{os.path.getsize(target)} bytes, {role}")


if __name__ == "__main__":
    main()
