"""Fleet mode (`oisp-analyze fleet SOURCE_URL --out OUT_URL`): the segments of many nodes, from any
fsspec URL (a local path, s3:// or an S3-compatible store), analyzed on a Dask cluster's workers with
the code of `--workers` (analyzer/parallel/), the outputs written to a URL with a manifest last."""
