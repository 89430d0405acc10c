//! Helpers for end-to-end tests: the real test environment (see tests/env/).
