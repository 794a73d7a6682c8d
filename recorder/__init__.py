"""oisp-record: capture TLS plaintext with eBPF uprobes into Parquet segments."""
