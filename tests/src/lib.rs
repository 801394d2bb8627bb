//! End-to-end tests for tessera live in `tests/e2e/` (one binary: harness, conformance, lifecycle).
