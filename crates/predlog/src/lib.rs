//! The prediction log (work in progress).
