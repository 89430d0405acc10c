//! deployer library (work in progress).
