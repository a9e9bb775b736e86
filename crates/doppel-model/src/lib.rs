//! Vocabulary types of the Doppel engine: ids, objects, errors. No I/O.
