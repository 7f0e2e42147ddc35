"""The reference repository's own files (Apache-2.0), vendored verbatim for the parity tests: see README.md."""
