//! celestial-server library (work in progress).
