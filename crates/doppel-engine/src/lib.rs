//! Doppel's integrator: ties store, storage and plugin host into operations.
