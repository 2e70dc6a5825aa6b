//! Pure builders: from a custom resource (and what was dereferenced) to the desired child objects. No I/O.
