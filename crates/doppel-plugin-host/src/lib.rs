//! Runs Delphix Virtualization SDK plugins in CPython workers and validates their schemas.
